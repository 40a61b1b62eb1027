"""Smart-turn judged at the first pause: the same verdicts as at the VAD stop, sooner.

What the analyzer did is read from the model itself: the test hands it a spy of the shared
ONNX session that keeps the input of every run. A run on the same input as the stock
analyzer's (the whole utterance and its silence, at the VAD stop) means the verdict was
judged at the stop; every other run was on the audio up to a pause.
"""

from __future__ import annotations

import asyncio
import wave
from dataclasses import dataclass

import numpy as np
import pytest
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.frames.frames import (
    DataFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

from bot.local.smart_turn import SharedSmartTurnAnalyzer
from bot.turns.speech_pause import PauseDetector
from bot.turns.turn_end import SentenceTurnStop
from tests.support.audio import shared_transcripts
from tests.support.pipeline import Heard
from tests.support.polling import until

FRAME = 320  # 20 ms at 16 kHz
VAD_STOP_FRAMES = 15  # the VAD's stop comes ~300 ms after the last word (stop_secs + its tail)


class ModelRuns:
    """The shared smart-turn session, keeping the features of every run (runs are serial:
    the analyzer has one model thread, so all have finished when its verdict is out)."""

    def __init__(self, session):
        self._session = session
        self.inputs: list[np.ndarray] = []

    def run(self, outputs, feeds):
        self.inputs.append(feeds["input_features"].copy())
        return self._session.run(outputs, feeds)


@dataclass
class Verdicts:
    stock: EndOfTurnState  # speculation off: judged at the VAD stop
    early: EndOfTurnState  # speculation on
    pause_runs: int  # runs on the audio up to a pause
    judged_at_stop: bool  # speculation on, and still a run at the stop

    @property
    def from_the_pause(self) -> bool:
        return not self.judged_at_stop


def frames(audio: np.ndarray) -> list[bytes]:
    audio = np.concatenate([audio, np.zeros(-len(audio) % FRAME, dtype=np.int16)])
    return [audio[i : i + FRAME].tobytes() for i in range(0, len(audio), FRAME)]


async def judge(
    models, audio: np.ndarray, speculate: bool
) -> tuple[EndOfTurnState, list[np.ndarray]]:
    """Feed an utterance as the turn strategy does, up to the VAD stop, and ask for the verdict."""
    runs = ModelRuns(models.smart_turn_session)
    analyzer = SharedSmartTurnAnalyzer(
        session=runs, speculate=speculate, params=SmartTurnParams(stop_secs=2.0)
    )
    analyzer.set_sample_rate(16000)
    for pcm in frames(audio):
        analyzer.append_audio(pcm, is_speech=True)  # the VAD says "speaking" until its stop
    state, _ = await analyzer.analyze_end_of_turn()
    await analyzer.cleanup()
    return state, runs.inputs


async def verdicts(models, utterance: np.ndarray) -> Verdicts:
    audio = np.concatenate([utterance, np.zeros(FRAME * VAD_STOP_FRAMES, dtype=np.int16)])
    stock, (at_stop,) = await judge(models, audio, speculate=False)
    early, runs = await judge(models, audio, speculate=True)
    stop_runs = sum(np.array_equal(run, at_stop) for run in runs)
    return Verdicts(stock, early, pause_runs=len(runs) - stop_runs, judged_at_stop=bool(stop_runs))


def test_a_pause_is_five_quiet_frames_after_speech():
    detector = PauseDetector()
    loud, quiet = np.full(FRAME, 8000, np.int16).tobytes(), np.zeros(FRAME, np.int16).tobytes()
    assert [detector.update(f) for f in [loud] + [quiet] * 6] == [
        False,
        False,
        False,
        False,
        False,
        True,
        False,
    ]
    assert detector.quiet
    detector.update(loud)
    assert not detector.quiet


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "Explain how a rainbow forms.",
        "My name is, um, and I",
        "Can you tell me about",
    ],
)
async def test_the_pause_verdict_ends_a_finished_turn_and_never_holds_one_stock_would_end(
    models, speech, text
):
    v = await verdicts(models, speech(text))
    assert v.pause_runs >= 1  # at the end, and at any pause inside the words
    if v.from_the_pause:
        assert v.early == EndOfTurnState.COMPLETE  # only a finished turn is taken from the pause
    else:
        assert v.early == v.stock  # judged again on the whole silence: the stock verdict
    if v.stock == EndOfTurnState.COMPLETE:
        assert v.early == EndOfTurnState.COMPLETE


async def test_finished_questions_are_mostly_answered_from_the_pause_run(models, speech):
    texts = [
        "What is the capital of France?",
        "Explain how a rainbow forms.",
        "Who wrote Romeo and Juliet?",
        "What is the boiling point of water?",
        "Which planet is closest to the sun?",
    ]
    early = [(await verdicts(models, speech(text))).from_the_pause for text in texts]
    assert sum(early) >= 3, (
        f"the pause run ended only {sum(early)} of {len(texts)} finished questions"
    )


async def test_speech_after_the_pause_discards_the_early_verdict(models, speech):
    words = speech("What is the capital of France?")
    gap = np.zeros(FRAME * 8, dtype=np.int16)  # 160 ms: a pause, then more words
    words_only = await verdicts(models, words)
    both = await verdicts(models, np.concatenate([words, gap, speech("And of Spain?")]))
    # The first question's pauses, the gap and the second question's end each start a run;
    # only the last can end the turn (the gap's was dropped when the words came back).
    assert both.pause_runs >= words_only.pause_runs + 1
    assert both.early == both.stock or both.from_the_pause


async def test_no_pause_no_speculation(models, speech):
    """Noise under the speech that never falls 26 dB below it: Pipecat's own path."""
    words = speech("What is the capital of France?").astype(np.int32)
    rng = np.random.default_rng(0)
    tail = np.zeros(FRAME * VAD_STOP_FRAMES, dtype=np.int32)
    audio = np.concatenate([words, tail])
    audio = np.clip(
        audio + rng.normal(0, 0.2 * np.abs(words).max(), len(audio)), -32768, 32767
    ).astype(np.int16)
    _, runs = await judge(models, audio, speculate=True)
    assert len(runs) == 1, "one run, at the VAD stop"


async def test_real_recordings_judged_finished_at_the_pause_stay_finished(models, shared_audio):
    for name, _ in shared_transcripts():
        with wave.open(str(shared_audio / name)) as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        v = await verdicts(models, audio)
        assert v.pause_runs >= 1, name
        if v.from_the_pause:
            assert v.early == EndOfTurnState.COMPLETE, name


@dataclass
class Marker(DataFrame):
    """Seen downstream once every data frame queued before it has been processed."""


class HeldOverBot(VADUserTurnStartStrategy):
    """The VAD starts a turn, except while the bot talks (BargeInStartStrategy holds those
    until the words decide)."""

    bot_speaking = True

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if self.bot_speaking and isinstance(frame, VADUserStartedSpeakingFrame):
            return ProcessFrameResult.CONTINUE
        return await super().process_frame(frame)


@pytest.mark.parametrize(
    "words, runs_at_stop",
    [("What is the capital of France?", 0), ("What is the capital of", 1)],
)
async def test_smart_turn_runs_only_where_its_verdict_decides(models, speech, words, runs_at_stop):
    """Speech with no user turn in progress (over the bot, held for its words) is not judged:
    nothing would use the verdict. A turn's stop is judged once its words are in, and only
    when they look unfinished: whole words end the turn whatever smart-turn would say."""
    runs = ModelRuns(models.smart_turn_session)
    start = HeldOverBot()
    stop = SentenceTurnStop(
        turn_analyzer=SharedSmartTurnAnalyzer(session=runs, params=SmartTurnParams(stop_secs=2.0)),
        speculate=False,
    )
    user, _ = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(start=[start], stop=[stop])
        ),
    )
    seen = Heard()
    worker = PipelineWorker(Pipeline([user, seen]), params=PipelineParams())
    running = asyncio.create_task(WorkerRunner(handle_sigint=False).run(worker))
    quiet = np.zeros(FRAME * VAD_STOP_FRAMES, dtype=np.int16)
    audio = np.concatenate([speech("What is the capital of France?"), quiet])

    async def utterance(text: str | None = None):
        done = InputAudioRawFrame(quiet[:FRAME].tobytes(), 16000, 1)  # after the VAD stop
        await worker.queue_frames(
            [VADUserStartedSpeakingFrame(start_secs=0.2)]
            + [InputAudioRawFrame(pcm, 16000, 1) for pcm in frames(audio)]
            + [VADUserStoppedSpeakingFrame(stop_secs=0.2), done]
        )
        await until(lambda: done in seen.frames, 10.0, "the utterance processed")
        if text:  # its words, as the local Whisper sends them after the VAD's stop
            words_in = Marker()  # (data frames keep their order: after the words)
            await worker.queue_frames([TranscriptionFrame(text, "user", time_now_iso8601()),
                                       words_in])
            await until(lambda: words_in in seen.frames, 10.0, "the words processed")

    try:
        await utterance()
        assert runs.inputs == []  # no turn started: nothing to judge
        assert not any(isinstance(f, UserStartedSpeakingFrame) for f in seen.frames)
        start.bot_speaking = False
        await utterance(words)
        assert any(isinstance(f, UserStartedSpeakingFrame) for f in seen.frames)
        assert len(runs.inputs) == runs_at_stop
        # Smart-turn's own timeout (2 s of silence) ends any turn still open.
        await worker.queue_frames([InputAudioRawFrame(pcm, 16000, 1) for pcm in frames(quiet)] * 8)
        ended = lambda: any(isinstance(f, UserStoppedSpeakingFrame) for f in seen.frames)  # noqa: E731
        await until(ended, 10.0, "the turn's end")
        assert len(runs.inputs) == runs_at_stop
    finally:
        await worker.cancel()
        await asyncio.wait_for(running, 10.0)
