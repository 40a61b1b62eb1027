"""Pipecat's Silero voice activity detection over the ONNX session loaded once per process
(bot/local/models.py; ~100 ms and tens of MB per copy): Pipecat's `SileroVADAnalyzer`
loads one per session in its constructor; each session here keeps only Silero's RNN state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from loguru import logger
from pipecat.audio.vad.silero import SileroOnnxModel
from pipecat.audio.vad.silero import _MODEL_RESET_INTERVAL_SECS as SILERO_RESET_INTERVAL_SECS
from pipecat.audio.vad.silero import (
    _MODEL_RESET_LOW_CONFIDENCE_WINDOWS as SILERO_RESET_LOW_CONFIDENCE_WINDOWS,
)
from pipecat.audio.vad.silero import (
    _MODEL_RESET_MAX_CONFIDENCE as SILERO_RESET_MAX_CONFIDENCE,
)
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

# A VAD window under -80 dBFS: 15 dB under the lowest volume bar the VAD uses (adaptive, -65
# LUFS). Digital silence, a muted microphone, a browser's suppressor in a quiet room.
SILENT_WINDOW_POWER = 10 ** (-80 / 10)

if TYPE_CHECKING:
    import onnxruntime


class _SharedSileroModel(SileroOnnxModel):
    """Silero's per-stream state around a shared ONNX session (Run is thread-safe).

    `SileroOnnxModel.__init__` opens a session of its own from a file, so it is not called:
    this sets what it sets (docs/upstream.md names the hook that would remove this)."""

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
