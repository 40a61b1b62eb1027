"""WebSocket sessions: Pipecat's FastAPI transport with a serializer that survives bad input.

The browser client (`@pipecat-ai/websocket-transport`) speaks Pipecat's protobuf frames.
A malformed message is dropped with a warning instead of ending the session; audio is
validated, downmixed and resampled to the pipeline's input rate; a client that keeps
sending garbage is disconnected with close code 1007 and a reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import soxr
from fastapi import WebSocket
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

from bot.config import Settings

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 96000
CLOSE_INVALID_DATA = 1007


class GuardedProtobufSerializer(ProtobufFrameSerializer):
    """Protobuf frames in; malformed input dropped, audio normalised to `sample_rate` mono."""

    def __init__(
        self,
        sample_rate: int,
        on_abuse: Callable[[str], Awaitable[None]] | None = None,
        max_consecutive_errors: int = 50,
    ):
        super().__init__()
        self._sample_rate = sample_rate
        self._on_abuse = on_abuse
        self._max_errors = max_consecutive_errors
        self._consecutive_errors = 0
        self.malformed_messages = 0
        self._resampler: soxr.ResampleStream | None = None
        self._resampler_rate = 0

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            if not isinstance(data, (bytes, bytearray)):
                raise ValueError("text message (this endpoint speaks binary protobuf frames)")
            frame = await super().deserialize(bytes(data))
            if isinstance(frame, InputAudioRawFrame):
                frame = self._normalise_audio(frame)
        except Exception as e:  # protobuf raises DecodeError, TypeError, ValueError…
            await self._malformed(f"{e.__class__.__name__}: {e}")
            return None
        if frame is not None:
            self._consecutive_errors = 0
        return frame

    def _normalise_audio(self, frame: InputAudioRawFrame) -> InputAudioRawFrame:
        rate, channels = frame.sample_rate, frame.num_channels
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise ValueError(f"audio sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE}")
        if channels not in (1, 2):
            raise ValueError(f"audio with {channels} channels (1 or 2 supported)")
        if len(frame.audio) % (2 * channels):
            raise ValueError(f"audio of {len(frame.audio)} bytes is not whole 16-bit samples")
        if rate == self._sample_rate and channels == 1:
            return frame
        samples = np.frombuffer(frame.audio, dtype=np.int16)
        if channels == 2:
            samples = samples.reshape(-1, 2).mean(axis=1).astype(np.int16)
        if rate != self._sample_rate:
            if self._resampler is None or self._resampler_rate != rate:
                self._resampler = soxr.ResampleStream(rate, self._sample_rate, 1, dtype="int16", quality="QQ")
                self._resampler_rate = rate
            samples = self._resampler.resample_chunk(samples)
        return InputAudioRawFrame(audio=samples.tobytes(), sample_rate=self._sample_rate, num_channels=1)

    async def _malformed(self, reason: str) -> None:
        self.malformed_messages += 1
        self._consecutive_errors += 1
        if self._consecutive_errors == 1:
            logger.warning(f"Dropped a malformed WebSocket message ({reason})")
        if self._consecutive_errors == self._max_errors and self._on_abuse:
            await self._on_abuse(f"{self._max_errors} malformed messages in a row; last: {reason}")


def create_websocket_transport(websocket: WebSocket, settings: Settings) -> FastAPIWebsocketTransport:
    async def close_for_abuse(reason: str) -> None:
        logger.warning(f"Closing a WebSocket session: {reason}")
        await websocket.close(code=CLOSE_INVALID_DATA, reason=reason[:120])

    return FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=GuardedProtobufSerializer(settings.input_sample_rate, on_abuse=close_for_abuse),
        ),
    )
