"""Pipecat's Piper text-to-speech over the voice loaded once per process
(bot/local/models.py): Pipecat's `PiperTTSService` loads, or downloads, one per session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from bot.text_aggregation import speakable_chunk

if TYPE_CHECKING:
    from piper import PiperVoice


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
