"""Pipecat's local components over models loaded once per process.

The stock Whisper and Piper services, Silero VAD and smart-turn analyzers load their
model in `__init__`, i.e. once per session (~100 ms and tens of MB each for the two
ONNX analyzers). A voice agent hosting many sessions shares one copy of the weights;
each session keeps only its own state (Silero's RNN state, the turn audio buffer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
import soxr
from loguru import logger
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features
from pipecat.audio.vad.silero import SileroOnnxModel
from pipecat.audio.vad.silero import _MODEL_RESET_INTERVAL_SECS as SILERO_RESET_INTERVAL_SECS
from pipecat.audio.vad.silero import (
    _MODEL_RESET_LOW_CONFIDENCE_WINDOWS as SILERO_RESET_LOW_CONFIDENCE_WINDOWS,
)
from pipecat.audio.vad.silero import (
    _MODEL_RESET_MAX_CONFIDENCE as SILERO_RESET_MAX_CONFIDENCE,
)
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    StartFrame,
    TranscriptionFrame,
)
from pipecat.metrics.metrics import MetricsData
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.whisper.stt import WhisperSTTSettings, language_to_whisper_language
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from bot.speech_pause import PauseDetector
from bot.text_aggregation import speakable_chunk
from bot.local.whisper_prompt import ConversationPrompt, transcribe_prompted
from bot.local.whisper_window import WindowedWhisper, heard

NO_SPEECH_PROB = 0.4  # a segment Whisper finds likelier than this to be no speech is dropped
SMART_TURN_SAMPLE_RATE = 16000  # what smart-turn v3 was trained on
SMART_TURN_SECS = 8  # how much of the turn's end it hears
# A VAD window under -80 dBFS: 15 dB under the lowest volume bar the VAD uses (adaptive, -65
# LUFS). Digital silence, a muted microphone, a browser's suppressor in a quiet room.
SILENT_WINDOW_POWER = 10 ** (-80 / 10)

if TYPE_CHECKING:
    import onnxruntime
    from faster_whisper import WhisperModel
    from pipecat.processors.aggregators.llm_context import LLMContext
    from piper import PiperVoice


class SharedWhisperSTTService(SegmentedSTTService):
    """Pipecat's Whisper service (`WhisperSTTService.run_stt`) over a model loaded once per
    process. WhisperSTTService loads its model in its constructor (`_load`) and reads it from
    a private attribute, so this is a SegmentedSTTService with Whisper's settings instead."""

    Settings = WhisperSTTSettings

    def __init__(
        self,
        *,
        model: WhisperModel,
        beam_size: int = 1,
        window_secs: float = 12.0,
        vocabulary: str = "",
        conversation: ConversationPrompt | None = None,
        **kwargs: Any,
    ):
        # `vocabulary`: names the user may say (the knowledge base's), as Whisper's prompt;
        # `conversation`: that and the session's last exchange instead (`follow`).
        super().__init__(
            settings=self.Settings(
                model="shared",
                language=Language.EN,
                no_speech_prob=NO_SPEECH_PROB,
                hotwords=None,
                initial_prompt=vocabulary or None,
            ),
            **kwargs,
        )
        self.whisper = WindowedWhisper(model, beam_size, window_secs)
        self._conversation = conversation
        self._running = False
        # After each segment, with its text ("" when Whisper heard no words): the STT
        # fallback waits for Whisper's word on a replayed tail (processors/fallback/stt.py).
        self._register_event_handler("on_segment_transcribed", sync=True)
        self._continuation: str | None = None

    def follow_conversation(self, context: LLMContext) -> None:
        """Read the last exchange of `context` before each transcription (when prompted by
        the conversation)."""
        if self._conversation:
            self._conversation.follow(context)

    def continue_from(self, text: str) -> None:
        """The next segment continues `text` (words another recogniser already heard of the
        same utterance): Whisper reads it as its previous text instead of the usual prompt.
        A tail decoded this way is heard better (bench/RESULTS.md, "Whisper on a tail")."""
        self._continuation = text.strip() or None

    @property
    def wants_wav_segments(self) -> bool:
        return False  # raw 16-bit PCM, which the model reads directly

    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        return language_to_whisper_language(language)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """As WhisperSTTService.run_stt, on the shared model."""
        await self.start_processing_metrics()
        prompt, self._continuation = self._continuation, None
        words = heard(await self._segments(audio, prompt=prompt), self._settings.no_speech_prob)
        await self.stop_processing_metrics()
        if words.text:
            logger.debug(f"Transcription: [{words.text}]")
            yield TranscriptionFrame(
                words.text,
                self._user_id,
                time_now_iso8601(),
                self._settings.language,
                result={"avg_logprob": words.avg_logprob},
            )
        await self._call_event_handler("on_segment_transcribed", words.text)

    async def _segments(
        self, pcm: bytes, *, prompt: str | None = None, **options: Any
    ) -> list[Any]:
        """Whisper's segments for 16-bit PCM (`WindowedWhisper.transcribe`'s options), read
        after `prompt`, or the conversation's or the vocabulary's."""
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        language = self._settings.language
        if prompt is not None:
            vocabulary = prompt
        elif self._conversation:
            vocabulary = self._conversation()
        else:
            vocabulary = self._settings.initial_prompt or ""

        def transcribe() -> list[Any]:
            # Segments decode as they are consumed: in the thread.
            return transcribe_prompted(
                self.whisper, audio, vocabulary, language=language, **options
            )

        return await asyncio.to_thread(transcribe)

    # A session cancelled while its pipeline is still starting (a client that leaves at
    # once) has its processors cleaned up, never cancelled, and SegmentedSTTService leaves
    # the transcription task its start() began running ("dangling tasks"): cancel it here.
    async def start(self, frame: StartFrame):
        self._running = True
        await super().start(frame)

    async def stop(self, frame: EndFrame):
        self._running = False
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame):
        self._running = False
        await super().cancel(frame)

    async def cleanup(self):
        if self._running:
            await self.cancel(CancelFrame(reason="cleaned up before it was stopped"))
        await super().cleanup()


class SharedPiperTTSService(TTSService):
    """Pipecat's Piper service (`PiperTTSService.run_tts`) over a voice loaded once per
    process (PiperTTSService loads, or downloads, one per session in its constructor). A
    reply's text comes cut by `FirstChunkTextAggregator` in an `LLMTextProcessor` ahead of
    it (bot/providers.py)."""

    # Pipecat's own Piper module is not imported: piper-tts (GPL-3.0) is needed only once
    # a voice is loaded (bot/local/models.py).
    Settings = TTSSettings

    def __init__(self, *, voice: PiperVoice, voice_name: str, **kwargs: Any):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=self.Settings(model=None, voice=voice_name, language=None),
            **kwargs,
        )
        self._piper = voice

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """As PiperTTSService.run_tts, on the shared voice; a phrase cut mid-sentence is
        spoken with a comma (`speakable_chunk`)."""
        text = speakable_chunk(text)
        chunks = self._piper.synthesize(text)

        async def audio() -> AsyncIterator[bytes]:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield chunk.audio_int16_bytes

        try:
            await self.start_tts_usage_metrics(text)
            async for frame in self._stream_audio_frames_from_iterator(
                audio(), in_sample_rate=self._piper.config.sample_rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except Exception as e:
            logger.error(f"{self} exception: {e}")
            yield ErrorFrame(error=f"Piper failed: {e}")
        finally:
            await self.stop_ttfb_metrics()


class _SharedSileroModel(SileroOnnxModel):
    """Silero's per-stream state around a shared ONNX session (Run is thread-safe)."""

    def __init__(self, session: onnxruntime.InferenceSession):
        self.session = session
        self.reset_states()
        self.sample_rates = [8000, 16000]


class SharedSileroVADAnalyzer(VADAnalyzer):
    """Pipecat's Silero VAD (`SileroVADAnalyzer`) over the shared session, run inline on the
    event loop. SileroVADAnalyzer loads its model in its constructor, so this is a
    VADAnalyzer that scores windows and resets the model's state as it does.

    Pipecat hands every 20 ms frame to a thread; the hand-off (submit, two wake-ups, the
    GIL passed back and forth) costs more CPU than the one 512-sample model call it carries
    (bench.frame_cost), and a session's CPU is what bounds how many a core holds. Inline,
    the loop is blocked for that call (~0.15-0.3 ms for a frame with a window due, one
    session's share of a 20 ms tick), which delays other sessions' frames by as much but
    spends no CPU on waking threads (bench/RESULTS.md, "VAD inline").
    """

    def __init__(
        self,
        *,
        session: onnxruntime.InferenceSession,
        params: VADParams | None = None,
    ):
        super().__init__(params=params)
        self.silero = _SharedSileroModel(session)
        self._windows_since_model_reset = 0
        self._quiet_windows = 0  # in a row, scored below SILERO_RESET_MAX_CONFIDENCE
        self._last_confidence = 0.0  # the model's latest score

    def set_sample_rate(self, sample_rate: int):
        if sample_rate not in (8000, 16000):
            raise ValueError(
                f"Silero VAD sample rate needs to be 16000 or 8000 (sample rate: {sample_rate})"
            )
        super().set_sample_rate(sample_rate)

    def num_frames_required(self) -> int:
        return 512 if self.sample_rate == 16000 else 256

    def voice_confidence(self, buffer: bytes) -> float:
        """As SileroVADAnalyzer.voice_confidence, on this session's state. Once the model has
        called the sound no speech, a window too quiet to pass any volume bar the VAD uses is
        not run through it; speech cut off into silence is still the model's to end."""
        try:
            audio = np.frombuffer(buffer, np.int16).astype(np.float32) / 32768.0
            if self._last_confidence < self.params.confidence and (
                float(np.dot(audio, audio)) < SILENT_WINDOW_POWER * len(audio)
            ):
                self._maybe_reset_model(0.0)
                return 0.0
            confidence = self.silero(audio, self.sample_rate)[0]
            self._last_confidence = confidence.item()
            self._maybe_reset_model(self._last_confidence)
            return confidence
        except Exception as e:  # an empty audio array
            logger.error(f"Error analyzing audio with Silero VAD: {e}")
            return 0

    def _maybe_reset_model(self, confidence: float) -> None:
        """As SileroVADAnalyzer's: clear the model's state every couple of seconds of audio,
        once the user is quiet (music or long silence leave it deaf to the speech after)."""
        self._windows_since_model_reset += 1
        low = confidence < SILERO_RESET_MAX_CONFIDENCE
        self._quiet_windows = self._quiet_windows + 1 if low else 0
        if (
            self._windows_since_model_reset * self.num_frames_required()
            >= SILERO_RESET_INTERVAL_SECS * self.sample_rate
            and self._vad_state == VADState.QUIET
            and self._quiet_windows >= SILERO_RESET_LOW_CONFIDENCE_WINDOWS
        ):
            self.silero.reset_states()
            self._windows_since_model_reset = 0

    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)  # inline: see the class docstring


class SharedSmartTurnAnalyzer(BaseSmartTurn):
    """Smart-turn v3 (Pipecat's `LocalSmartTurnAnalyzerV3`, which loads its model in its
    constructor) over the shared session, judging the turn before the VAD stop comes.

    Pipecat runs the model (~90 ms on one core) when the VAD reports a stop, i.e.
    stop_secs after the last word, and the turn waits for it. With `speculate`
    (SMART_TURN_SPECULATE, off by default) this analyzer also runs it the moment the audio
    pauses (bot/speech_pause.py, ~100 ms after the last word). If
    nothing but quiet follows until the VAD stop and that run heard a finished turn, the
    turn ends at once; otherwise (speech came back, or the run heard an unfinished turn)
    the model judges the whole silence at the stop, as stock. With only ~100 ms of
    trailing silence the model calls more turns unfinished, so an "unfinished" from the
    pause is not trusted: it would make the turn wait for SMART_TURN_STOP_SECS
    (bench/RESULTS.md, "Smart-turn at the pause": right as often as stock either way).
    The cost: a model run at every pause inside the speech, and a turn can now end on
    either verdict, so more questions are cut at a comma.

    `turn_in_progress` (kept by the stop strategy, bot/turn_end.py): with no user turn to
    end (speech over the bot that the barge-in logic is still judging, its echo, a
    backchannel), a verdict would be dropped when the next turn starts, so the model does
    not run; the audio is cleared as a "finished" verdict would clear it.

    `verdict_on_request` (set by the stop strategy): at the VAD's stop the verdict is only
    owed, not reached ("unfinished" for now); the strategy asks for it with `judge()` once
    the segment's words are in and only if they look unfinished, the one case where the
    verdict changes the turn's end (`decide()` in bot/turn_end.py).
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
