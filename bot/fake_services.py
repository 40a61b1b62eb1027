"""Instant stand-ins for STT, LLM and TTS, for capacity, soak and memory measurements.

They are real Pipecat services driven by real frames, so everything around them
(transport, denoise, VAD, turn detection, context aggregation, metrics) runs for real;
only the model work is replaced by a fixed answer given at once. Select them with
`STT_PROVIDER=fake`, `LLM_PROVIDER=fake`, `TTS_PROVIDER=fake`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601

FAKE_TRANSCRIPT = "hello there"
FAKE_ANSWER = "Hi. This is a fixed answer."
# Seconds of audio the fake voice speaks per character of text.
FAKE_SECS_PER_CHAR = 0.02


class InstantSTTService(SegmentedSTTService):
    """Answers every speech segment (cut by the VAD) with a fixed transcript."""

    def __init__(self, *, transcript: str = FAKE_TRANSCRIPT, **kwargs):
        super().__init__(
            ttfs_p99_latency=0.3, settings=STTSettings(model=None, language=None), **kwargs
        )
        self._transcript = transcript

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        yield TranscriptionFrame(self._transcript, self._user_id, time_now_iso8601())


class InstantLLMService(LLMService):
    """Answers every context with a fixed reply, streamed as one text frame."""

    def __init__(self, *, answer: str = FAKE_ANSWER, **kwargs):
        unused = {f.name: None for f in dataclasses.fields(LLMSettings) if f.init and f.name != "extra"}
        super().__init__(settings=LLMSettings(**unused), **kwargs)
        self._answer = answer

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.start_ttfb_metrics()
            await self.push_frame(LLMFullResponseStartFrame())
            await self.stop_ttfb_metrics()
            await self.push_frame(LLMTextFrame(self._answer))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class InstantTTSService(TTSService):
    """Speaks any text at once as a quiet tone (length proportional to the text)."""

    def __init__(self, *, secs_per_char: float = FAKE_SECS_PER_CHAR, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kwargs,
        )
        self._secs_per_char = secs_per_char

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        await self.start_ttfb_metrics()
        n = max(1, int(len(text) * self._secs_per_char * self.sample_rate))
        tone = (np.sin(np.arange(n) * 2 * np.pi * 440 / self.sample_rate) * 3000).astype(np.int16)
        await self.stop_ttfb_metrics()
        yield TTSAudioRawFrame(tone.tobytes(), self.sample_rate, 1, context_id=context_id)
