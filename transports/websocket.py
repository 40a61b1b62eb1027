"""WebSocket sessions: Pipecat's FastAPI transport with a serializer that takes from the
client only what a client may send.

The browser client (`@pipecat-ai/websocket-transport`) speaks Pipecat's protobuf frames. A
client may send microphone audio and the RTVI client messages this agent serves
(`ACCEPTED_RTVI_TYPES`); anything else — a text, transcription or interruption frame, an
RTVI message that would put text, audio or tool results into the conversation, bad bytes —
is refused and counted. A client whose refused messages reach MALFORMED_LIMIT among its
last MALFORMED_WINDOW messages is closed with 1007 and the reason; refusals are logged once,
then as a count every MALFORMED_LOG_INTERVAL_SECS. Audio is validated, downmixed and
resampled to the pipeline's input rate, and held to real time: a client sending faster
waits (the socket is not read meanwhile, so what it sent ahead stays in bounded buffers).
When the session ends for a reason of the server's (idle, ended by the admin API) the
socket closes with 1000 and that reason; ended because the server is going away (its drain
grace over), with 1012 and the reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np
import pipecat.frames.protobufs.frames_pb2 as proto
import pipecat.processors.frameworks.rtvi.models as RTVI
import soxr
from fastapi import WebSocket
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from bot.config import Settings
from bot.logs import ThrottledLog

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 96000
CLOSE_NORMAL = 1000
CLOSE_INVALID_DATA = 1007
CLOSE_SERVICE_RESTART = 1012
# How a session ended because its server is going away begins (web/drain.py): its socket
# closes with 1012, on which the browser client resumes the conversation (elsewhere).
SHUTTING_DOWN = "the server is shutting down"
# What the agent serves of RTVI's client messages. `send-text`, `raw-audio`,
# `llm-function-call-result`, `send-file` and the UI messages would let a client put words,
# audio or tool results into the conversation past the microphone: refused.
ACCEPTED_RTVI_TYPES = frozenset({"client-ready", "client-message", "disconnect-bot"})
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024
# Audio a client may send at once beyond real time (what it could not send during a
# network stall, or what it said while its bot was loading) before the server makes it wait.
AUDIO_BURST_SECS = 10.0


class RefusedMessage(ValueError):
    """A message the client may not send (why is the text)."""


class RefusalTally:
    """Whether each of the last `window` messages was refused; `limit` refusals is abuse."""

    def __init__(self, limit: int, window: int):
        self.limit = limit
        self.refused = 0  # in the whole session
        self._recent: deque[bool] = deque(maxlen=max(window, limit))
        self._refused_recently = 0

    def add(self, refused: bool) -> bool:
        """Count one message; True once `limit` of the recent ones were refused."""
        if len(self._recent) == self._recent.maxlen:
            self._refused_recently -= self._recent[0]
        self._recent.append(refused)
        self._refused_recently += refused
        self.refused += refused
        return self._refused_recently >= self.limit


class AudioPacer:
    """Holds a client's audio to real time: a bucket of `burst_secs` of audio, full at the
    start and refilled as time passes; a frame the bucket cannot cover waits for it. A
    client that fell behind catches up at once; one that runs ahead is slowed to real time."""

    def __init__(self, burst_secs: float, clock: Callable[[], float] = time.monotonic):
        self._burst = burst_secs
        self._clock = clock
        self._available = burst_secs
        self._at: float | None = None

    def delay(self, secs: float) -> float:
        """Seconds to wait before taking `secs` more audio."""
        now = self._clock()
        if self._at is not None:
            self._available = min(self._burst, self._available + now - self._at)
        self._at = now
        self._available -= secs
        return max(0.0, -self._available)


class GuardedProtobufSerializer(ProtobufFrameSerializer):
    """Protobuf frames in: audio (normalised to `sample_rate` mono, paced to real time) and
    the accepted RTVI client messages; everything else refused and counted."""

    def __init__(
        self,
        sample_rate: int,
        *,
        on_abuse: Callable[[str], Awaitable[None]] | None = None,
        on_end: Callable[[Frame], Awaitable[None]] | None = None,
        malformed_limit: int = 20,
        malformed_window: int = 100,
        log_interval_secs: float = 10.0,
        audio_burst_secs: float = AUDIO_BURST_SECS,
    ):
        super().__init__()
        self._sample_rate = sample_rate
        self._on_abuse = on_abuse
        self._on_end = on_end
        self.tally = RefusalTally(malformed_limit, malformed_window)
        self._pacer = AudioPacer(audio_burst_secs)
        self._log = ThrottledLog(log_interval_secs)
        self._abused = False
        self._client_ready = False
        self._resampler: soxr.ResampleStream | None = None
        self._resampler_rate = 0

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if self._abused:
            return None
        try:
            frame = self._parse(data)
        except (RefusedMessage, DecodeError, ValueError) as e:
            await self._refuse(str(e) or e.__class__.__name__)
            return None
        self.tally.add(False)
        if isinstance(frame, InputAudioRawFrame):
            wait = self._pacer.delay(frame.num_frames / frame.sample_rate)
            if wait > 0:
                await asyncio.sleep(wait)
        return frame

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, (EndFrame, CancelFrame)):
            # The pipeline is ending: the transport closes the socket next.
            if self._on_end is not None:
                await self._on_end(frame)
            return None
        return await super().serialize(frame)

    # --- what a client may send ----------------------------------------------------------
    def _parse(self, data: str | bytes) -> Frame:
        if not isinstance(data, (bytes, bytearray)):
            raise RefusedMessage("a text message (this endpoint speaks binary protobuf frames)")
        if not data:
            raise RefusedMessage("an empty message")
        message = proto.Frame.FromString(bytes(data))
        kind = message.WhichOneof("frame")
        if kind is None:
            raise RefusedMessage("a protobuf message with no frame in it")
        inner = getattr(message, kind)
        if len(UnknownFieldSet(message)) or len(UnknownFieldSet(inner)):
            raise RefusedMessage(f"a {kind} frame with fields this server does not know")
        if kind == "audio":
            return self._audio(inner)
        if kind == "message":
            return self._rtvi(inner.data)
        raise RefusedMessage(f"a {kind} frame (clients may send only audio and RTVI messages)")

    def _audio(self, audio) -> InputAudioRawFrame:
        rate, channels, pcm = audio.sample_rate, audio.num_channels, audio.audio
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise RefusedMessage(
                f"audio at {rate} Hz (outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE})"
            )
        if channels not in (1, 2):
            raise RefusedMessage(f"audio with {channels} channels (1 or 2 supported)")
        if not pcm or len(pcm) % (2 * channels):
            raise RefusedMessage(f"audio of {len(pcm)} bytes (not whole 16-bit samples)")
        if rate == self._sample_rate and channels == 1:
            return InputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1)
        samples = np.frombuffer(pcm, dtype=np.int16)
        if channels == 2:
            samples = samples.reshape(-1, 2).mean(axis=1).astype(np.int16)
        if rate != self._sample_rate:
            if self._resampler is None or self._resampler_rate != rate:
                self._resampler = soxr.ResampleStream(
                    rate, self._sample_rate, 1, dtype="int16", quality="QQ"
                )
                self._resampler_rate = rate
            samples = self._resampler.resample_chunk(samples)
        return InputAudioRawFrame(
            audio=samples.tobytes(), sample_rate=self._sample_rate, num_channels=1
        )

    def _rtvi(self, text: str) -> InputTransportMessageFrame:
        if len(text) > MAX_CLIENT_MESSAGE_BYTES:
            raise RefusedMessage(
                f"a message of {len(text)} characters (at most {MAX_CLIENT_MESSAGE_BYTES})"
            )
        try:
            raw = json.loads(text)
            message = RTVI.Message.model_validate(raw)
        except (ValueError, ValidationError) as e:
            raise RefusedMessage(f"a message that is not RTVI ({e.__class__.__name__})") from None
        if not isinstance(raw, dict) or raw.get("label") != RTVI.MESSAGE_LABEL:
            raise RefusedMessage("a message that is not RTVI (no rtvi-ai label)")
        if message.type not in ACCEPTED_RTVI_TYPES:
            raise RefusedMessage(f"an RTVI {message.type[:40]!r} message (not served here)")
        if message.type == "client-ready":
            if self._client_ready:
                raise RefusedMessage("a second RTVI client-ready message")
            self._client_ready = True
        elif message.type == "client-message":
            try:
                RTVI.RawClientMessageData.model_validate(message.data)
            except ValidationError:
                raise RefusedMessage("an RTVI client-message without its type ('t')") from None
        return InputTransportMessageFrame(message=message.model_dump(exclude_none=True))

    async def _refuse(self, reason: str) -> None:
        abuse = self.tally.add(True)
        self._log(f"Refused a WebSocket message: {reason}")
        if abuse and not self._abused:
            self._abused = True
            self._log.flush()
            if self._on_abuse is not None:
                await self._on_abuse(
                    f"{self.tally.limit} of the last messages were refused; last: {reason}"
                )


class ClosingWebSocket:
    """The session's WebSocket as Pipecat's transport sees it: it closes once, with the
    session's code and reason (Pipecat's transport closes without either)."""

    def __init__(self, websocket: WebSocket):
        self._websocket = websocket
        self._closed = False
        self.code = CLOSE_NORMAL
        self.reason = ""

    def __getattr__(self, name: str):
        return getattr(self._websocket, name)

    @property
    def open(self) -> bool:
        ws = self._websocket
        return (
            not self._closed
            and ws.client_state == WebSocketState.CONNECTED
            and ws.application_state == WebSocketState.CONNECTED
        )

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.open:
            return
        self._closed = True
        try:
            await self._websocket.close(code or self.code, (reason or self.reason)[:120])
        except RuntimeError:  # the client went first
            pass


def end_reason(frame: Frame, settings: Settings) -> str:
    """What a client is told when its session ends with `frame`."""
    reason = str(getattr(frame, "reason", "") or "")
    if reason == "idle timeout":
        return f"no speech for {settings.idle_timeout_secs:.0f} s (IDLE_TIMEOUT_SECS)"
    return reason or "the session has ended"


def create_websocket_transport(
    websocket: ClosingWebSocket, settings: Settings
) -> FastAPIWebsocketTransport:
    async def close_for_abuse(reason: str) -> None:
        logger.warning(f"Closing a WebSocket session: {reason}")
        await websocket.close(CLOSE_INVALID_DATA, reason)

    async def close_at_end(frame: Frame) -> None:
        websocket.reason = end_reason(frame, settings)
        if websocket.reason.startswith(SHUTTING_DOWN):
            websocket.code = CLOSE_SERVICE_RESTART

    return FastAPIWebsocketTransport(
        websocket=websocket,  # type: ignore[arg-type]  # a WebSocket in all it is used for
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            # Origins are checked before the socket is accepted (web/session_routes.py).
            allowed_origins=[],
            serializer=GuardedProtobufSerializer(
                settings.input_sample_rate,
                on_abuse=close_for_abuse,
                on_end=close_at_end,
                malformed_limit=settings.malformed_limit,
                malformed_window=settings.malformed_window,
                log_interval_secs=settings.malformed_log_interval_secs,
            ),
        ),
    )
