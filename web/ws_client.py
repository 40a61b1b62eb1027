"""A Python client for the `/ws` endpoint, speaking what the browser client speaks.

Protobuf frames (Pipecat's `frames.proto`): microphone audio out; bot audio, interruption
and RTVI messages in. Used by the tests and the benchmarks; everything received is
timestamped with `time.monotonic()` on arrival.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pipecat.frames.protobufs.frames_pb2 as proto
import websockets

FRAME_SECS = 0.02


@dataclass
class Received:
    bot_audio: bytearray = field(default_factory=bytearray)
    audio_sample_rate: int = 0
    # (arrival time, bytes) of every bot audio message
    audio_chunks: list[tuple[float, int]] = field(default_factory=list)
    interruptions: list[float] = field(default_factory=list)
    # (arrival time, RTVI message)
    messages: list[tuple[float, dict]] = field(default_factory=list)

    def server_messages(self, kind: str) -> list[dict]:
        return [
            m["data"]
            for _, m in self.messages
            if m.get("type") == "server-message" and m.get("data", {}).get("type") == kind
        ]

    def rtvi(self, kind: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.messages if m.get("type") == kind]

    @property
    def turns(self) -> list[dict]:
        return self.server_messages("turn-metrics")

    def user_transcripts(self, final: bool = True) -> list[str]:
        return [
            m["data"]["text"]
            for _, m in self.rtvi("user-transcription")
            if bool(m["data"].get("final")) == final
        ]

    def audio_ms(self) -> float:
        if not self.audio_sample_rate:
            return 0.0
        return 1000.0 * len(self.bot_audio) / 2 / self.audio_sample_rate


class _Speaker:
    """Plays the bot's audio back into our microphone, as a laptop without headphones does.

    Like a sound card, the loudspeaker plays on the wall clock: bot audio plays from when it
    arrives, or right after what is still playing, and each microphone frame hears what
    played `delay_secs` (the room, the playout buffer) before the moment it was captured,
    attenuated by `gain_db`. A client that falls behind and then sends its late frames in a
    burst does not play the bot faster for it. An interruption from the server flushes what
    has not played yet, as the browser client does. With `room`, the echo also has a
    reverberant tail (~0.3 s); with `browser_aec`, the microphone goes through WebRTC's echo
    canceller with the played audio as its reference before it is sent, as a browser's
    `echoCancellation` does.
    """

    def __init__(
        self,
        gain_db: float,
        delay_secs: float,
        mic_rate: int,
        room: bool = False,
        browser_aec: bool = False,
        *,
        clock=time.monotonic,
    ):
        self.gain = 10 ** (gain_db / 20)
        self.delay_secs = delay_secs
        self.mic_rate = mic_rate
        self.clock = clock
        self._t0 = clock()
        # What the loudspeaker plays, from sample index `_first` (on the clock since `_t0`).
        self._played = np.zeros(0, dtype=np.float32)
        self._first = 0
        self._resampler = None
        self._rate = 0
        self._room = _room_impulse(mic_rate) if room else None
        self._tail = np.zeros(0 if self._room is None else len(self._room) - 1, dtype=np.float32)
        self._aec = None
        if browser_aec:
            from livekit import rtc

            self._rtc = rtc
            self._aec = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)

    def _index(self, t: float) -> int:
        return int(round((t - self._t0) * self.mic_rate))

    @property
    def _end(self) -> int:
        return self._first + len(self._played)

    def receive(self, pcm: bytes, rate: int) -> None:
        import soxr

        if rate != self._rate:
            self._resampler = soxr.ResampleStream(rate, self.mic_rate, 1, dtype="float32")
            self._rate = rate
        audio = self._resampler.resample_chunk(
            np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        )
        now = self._index(self.clock())
        if now > self._end:  # the speaker ran dry: this plays from now
            self._played = np.concatenate([self._played, np.zeros(now - self._end, np.float32)])
        self._played = np.concatenate([self._played, audio])

    def flush(self) -> None:
        now = self._index(self.clock())
        self._played = self._played[: max(0, now - self._first)]

    def mix(self, mic: np.ndarray, captured_at: float) -> np.ndarray:
        """`mic`, captured from `captured_at`, with what the speaker played then."""
        n = len(mic)
        start = self._index(captured_at - self.delay_secs)
        played = np.zeros(n, dtype=np.float32)
        lo, hi = max(start, self._first), min(start + n, self._end)
        if hi > lo:
            played[lo - start : hi - start] = self._played[lo - self._first : hi - self._first]
        if start > self._first:  # played before the frames being captured: heard already
            keep = min(start - self._first, len(self._played))
            self._played, self._first = self._played[keep:], self._first + keep
        echo = played * self.gain
        if self._room is not None:
            full = np.convolve(echo, self._room)
            full[: len(self._tail)] += self._tail
            echo, self._tail = full[:n], full[n:]
        out = np.clip(mic.astype(np.float32) + echo, -32768, 32767).astype(np.int16)
        if self._aec is not None:
            out = self._cancel(out, played.astype(np.int16))
        return out

    def _cancel(self, mic: np.ndarray, played: np.ndarray) -> np.ndarray:
        rtc, block = self._rtc, self.mic_rate // 100
        out = mic.copy()
        for i in range(0, len(mic) - block + 1, block):
            far = rtc.AudioFrame(played[i : i + block].tobytes(), self.mic_rate, 1, block)
            self._aec.process_reverse_stream(far)
            frame = rtc.AudioFrame(mic[i : i + block].tobytes(), self.mic_rate, 1, block)
            self._aec.process_stream(frame)
            out[i : i + block] = np.frombuffer(bytes(frame.data), dtype=np.int16)
        return out


def _room_impulse(rate: int) -> np.ndarray:
    """A direct path and an exponentially decaying reverberant tail (RT60 ~0.3 s)."""
    rng = np.random.default_rng(7)
    n = int(0.25 * rate)
    impulse = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.045 * rate))
    impulse[0] += 3.0
    return (impulse / np.linalg.norm(impulse)).astype(np.float32)


class AgentClient:
    def __init__(
        self,
        url: str,
        sample_rate: int = 16000,
        echo_gain_db: float | None = None,
        echo_delay_secs: float = 0.1,
        echo_room: bool = False,
        browser_aec: bool = False,
        headers: dict[str, str] | None = None,
        client_ready: dict | None = None,
    ):
        """`echo_gain_db` (e.g. -20) plays the bot's audio back into the microphone (see
        `_Speaker` for the room and the browser's echo canceller); `headers` go with the
        WebSocket handshake (e.g. Origin); `client_ready` joins the RTVI client-ready data
        (e.g. {"user_id": …})."""
        self.url = url
        self.headers = headers or {}
        self.client_ready = client_ready or {}
        self.sample_rate = sample_rate
        self.speaker = (
            _Speaker(
                echo_gain_db, echo_delay_secs, sample_rate, room=echo_room, browser_aec=browser_aec
            )
            if echo_gain_db is not None
            else None
        )
        self.received = Received()
        self.last_speech_sent_at: float | None = None
        self.first_speech_sent_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._next_frame_at = 0.0

    async def __aenter__(self) -> AgentClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        self._ws = await websockets.connect(
            self.url, max_size=None, additional_headers=self.headers
        )
        self._reader = asyncio.create_task(self._read())
        try:
            await self.send_rtvi(
                "client-ready",
                {
                    "version": "2.2.0",
                    **self.client_ready,
                    "about": {"library": "voice-agent-python-client", "library_version": "1"},
                },
            )
        except websockets.ConnectionClosed:
            pass  # refused at once (e.g. the server is full); close_code tells why

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def send_raw(self, data: bytes | str) -> None:
        await self._ws.send(data)

    async def send_rtvi(self, kind: str, data: dict | None = None) -> None:
        message = {"label": "rtvi-ai", "type": kind, "id": uuid.uuid4().hex[:8], "data": data or {}}
        frame = proto.Frame()
        frame.message.data = json.dumps(message)
        await self._ws.send(frame.SerializeToString())

    async def send_audio(
        self, pcm: bytes, sample_rate: int | None = None, captured_at: float | None = None
    ) -> None:
        """Send one microphone frame; `captured_at`: when the microphone's clock took it
        (by default the frame due on this client's own clock, see `_tick`)."""
        if self.speaker is not None and sample_rate in (None, self.sample_rate):
            if captured_at is None:
                captured_at = self._next_frame_at or time.monotonic()
            mic = np.frombuffer(pcm, dtype=np.int16)
            pcm = self.speaker.mix(mic, captured_at).tobytes()
        frame = proto.Frame()
        frame.audio.audio = pcm
        frame.audio.sample_rate = sample_rate or self.sample_rate
        frame.audio.num_channels = 1
        await self._ws.send(frame.SerializeToString())

    async def _tick(self) -> None:
        """Wait for the next 20 ms frame on the microphone's clock, which, like a sound
        card's, does not drift: a late frame is followed by early ones (up to 1 s behind)."""
        now = time.monotonic()
        if not self._next_frame_at:
            self._next_frame_at = now  # the microphone's clock starts with its first frame
        self._next_frame_at = max(self._next_frame_at, now - 1.0) + FRAME_SECS
        await asyncio.sleep(max(0.0, self._next_frame_at - now))

    async def speak(self, audio: np.ndarray, realtime: bool = True) -> None:
        """Stream int16 samples as 20 ms microphone frames."""
        n = int(self.sample_rate * FRAME_SECS)
        self.first_speech_sent_at = time.monotonic()
        for offset in range(0, len(audio), n):
            chunk = audio[offset : offset + n]
            if len(chunk) < n:
                chunk = np.pad(chunk, (0, n - len(chunk)))
            await self.send_audio(chunk.astype(np.int16).tobytes())
            if realtime:
                await self._tick()
        self.last_speech_sent_at = time.monotonic()

    async def silence(self, secs: float) -> None:
        await self.speak(np.zeros(int(secs * self.sample_rate), dtype=np.int16))

    async def silence_until(self, predicate: Callable[[Received], bool], timeout: float) -> bool:
        """Keep the microphone live (silence, real time) until `predicate` holds."""
        silence = np.zeros(int(self.sample_rate * FRAME_SECS), dtype=np.int16).tobytes()
        deadline = time.monotonic() + timeout
        while not predicate(self.received):
            if time.monotonic() > deadline or self.closed:
                return False
            await self.send_audio(silence)
            await self._tick()
        return True

    async def wait_for(self, predicate: Callable[[Received], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self.received):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return predicate(self.received)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return True

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    async def _read(self) -> None:
        try:
            async for data in self._ws:
                now = time.monotonic()
                if isinstance(data, str):
                    continue
                frame = proto.Frame.FromString(data)
                which = frame.WhichOneof("frame")
                r = self.received
                if which == "audio":
                    r.audio_sample_rate = frame.audio.sample_rate
                    r.bot_audio.extend(frame.audio.audio)
                    r.audio_chunks.append((now, len(frame.audio.audio)))
                    if self.speaker is not None:
                        self.speaker.receive(frame.audio.audio, frame.audio.sample_rate)
                elif which == "interruption":
                    r.interruptions.append(now)
                    if self.speaker is not None:
                        self.speaker.flush()
                elif which == "message":
                    r.messages.append((now, json.loads(frame.message.data)))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code if self._ws.close_code is not None else 1006
            self.close_reason = self._ws.close_reason or ""
            self._changed.set()
