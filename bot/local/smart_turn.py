"""Pipecat's smart-turn v3 end-of-turn model over the ONNX session loaded once per process
(bot/local/models.py; ~100 ms and tens of MB per copy): Pipecat's `LocalSmartTurnAnalyzerV3`
loads one per session in its constructor; each session here keeps only its turn's audio."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
import soxr
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features
from pipecat.metrics.metrics import MetricsData

from bot.turns.speech_pause import PauseDetector

SMART_TURN_SAMPLE_RATE = 16000  # what smart-turn v3 was trained on
SMART_TURN_SECS = 8  # how much of the turn's end it hears

if TYPE_CHECKING:
    import onnxruntime


class SharedSmartTurnAnalyzer(BaseSmartTurn):
    """Smart-turn v3 (Pipecat's `LocalSmartTurnAnalyzerV3`, which loads its model in its
    constructor) over the shared session, judging the turn before the VAD stop comes.

    Pipecat runs the model (~90 ms on one core) when the VAD reports a stop, i.e.
    stop_secs after the last word, and the turn waits for it. With `speculate`
    (SMART_TURN_SPECULATE, off by default) this analyzer also runs it the moment the audio
    pauses (bot/turns/speech_pause.py, ~100 ms after the last word). If
    nothing but quiet follows until the VAD stop and that run heard a finished turn, the
    turn ends at once; otherwise (speech came back, or the run heard an unfinished turn)
    the model judges the whole silence at the stop, as stock. With only ~100 ms of
    trailing silence the model calls more turns unfinished, so an "unfinished" from the
    pause is not trusted: it would make the turn wait for SMART_TURN_STOP_SECS
    (bench/RESULTS.md, "Smart-turn at the pause": right as often as stock either way).
    The cost: a model run at every pause inside the speech, and a turn can now end on
    either verdict, so more questions are cut at a comma.

    `turn_in_progress` (kept by the stop strategy, bot/turns/turn_end.py): with no user turn to
    end (speech over the bot that the barge-in logic is still judging, its echo, a
    backchannel), a verdict would be dropped when the next turn starts, so the model does
    not run; the audio is cleared as a "finished" verdict would clear it.

    `verdict_on_request` (set by the stop strategy): at the VAD's stop the verdict is only
    owed, not reached ("unfinished" for now); the strategy asks for it with `judge()` once
    the segment's words are in and only if they look unfinished, the one case where the
    verdict changes the turn's end (`decide()` in bot/turns/turn_end.py).
    """

    def __init__(
        self, *, session: onnxruntime.InferenceSession, speculate: bool = False, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.model_session = session
        self._speculate = speculate
        self._pause = PauseDetector()
        self._speculation: Future | None = None
        self.turn_in_progress = True  # stock: every VAD stop is judged
        self.verdict_on_request = False  # stock: judged at the VAD stop
        self._verdict_owed = False

    def _predict_endpoint(self, audio_array: np.ndarray) -> dict[str, Any]:
        """As LocalSmartTurnAnalyzerV3's, on the shared session (without its
        PIPECAT_SMART_TURN_LOG_DATA recordings)."""
        audio = audio_array
        if self.sample_rate and self.sample_rate != SMART_TURN_SAMPLE_RATE:
            audio = soxr.resample(audio, self.sample_rate, SMART_TURN_SAMPLE_RATE, quality="HQ")
        samples = SMART_TURN_SECS * SMART_TURN_SAMPLE_RATE  # the last 8 s, padded in front
        audio = np.pad(audio[-samples:], (max(0, samples - len(audio)), 0))
        features = compute_whisper_log_mel_features(audio, do_normalize=True)[np.newaxis]
        outputs = self.model_session.run(None, {"input_features": features})
        probability = outputs[0][0].item()
        return {"prediction": 1 if probability > 0.5 else 0, "probability": probability}

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        if is_speech:
            self._verdict_owed = False  # the user went on: the next stop is judged anew
        state = super().append_audio(buffer, is_speech)
        # `is_speech` stays true until the VAD stop: the frames in between are the pause.
        if (
            not self._speculate
            or not self.turn_in_progress
            or not is_speech
            or state == EndOfTurnState.COMPLETE
        ):
            return state
        paused = self._pause.update(buffer)
        if not self._pause.quiet:
            self._speculation = None  # speaking again: that pause was not the end
        elif paused and self._speculation is None:
            snapshot = list(self._audio_buffer)
            self._speculation = self._model_executor.submit(self._process_speech_segment, snapshot)
        return state

    @property
    def verdict_owed(self) -> bool:
        return self._verdict_owed

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, MetricsData | None]:
        if not self.turn_in_progress:
            self._clear(EndOfTurnState.COMPLETE)  # no turn to end: see the class docstring
            return EndOfTurnState.COMPLETE, None
        if self.verdict_on_request and self.speech_triggered:
            self._verdict_owed = True
            return EndOfTurnState.INCOMPLETE, None
        return await self._judge()

    async def judge(self) -> tuple[EndOfTurnState, MetricsData | None]:
        """The verdict owed since the VAD's stop (see `verdict_on_request`)."""
        self._verdict_owed = False
        return await self._judge()

    async def _judge(self) -> tuple[EndOfTurnState, MetricsData | None]:
        speculation, self._speculation = self._speculation, None
        if speculation is not None and self._pause.quiet:  # only quiet since the snapshot
            state, result = await asyncio.wrap_future(speculation)
            if state == EndOfTurnState.COMPLETE:
                self._clear(state)
                return state, result
        # No pause run, or it heard an unfinished turn: judge all of the silence, as stock.
        return await super().analyze_end_of_turn()

    def _clear(self, turn_state: EndOfTurnState):
        super()._clear(turn_state)
        if turn_state == EndOfTurnState.COMPLETE:
            self._pause.reset()
            self._speculation = None
            self._verdict_owed = False
