"""The simulated user's side of a live session: a real-time microphone on an `AgentClient`
(one 20 ms frame every 20 ms, every microphone driven by one clock), and when the bot's
audio arrived.

Times are `time.monotonic()` seconds, taken on the client (see bench/common.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from bench.common import FRAME_SECS, speech_bounds

# --- the microphone -----------------------------------------------------------------------


@dataclass
class Utterance:
    """Audio queued on a microphone, and when its speech went out."""

    audio: np.ndarray
    speech_first: int = 0  # sample indices of the speech part
    speech_last: int = 0
    first_speech_sent_at: float | None = None
    last_speech_sent_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    position: int = 0


class Microphone:
    """A live microphone on an `AgentClient`: one 20 ms frame every 20 ms, silence between
    utterances, never a pause. Frames are paced against an absolute schedule, so a late
    frame does not shift the next ones; `lateness` records how late each frame went out
    (a client that cannot keep up shows here, not in the server's figures).
    """

    def __init__(self, client, sample_rate: int = 16000, phase: float = 0.0):
        self.client = client
        self.n = int(sample_rate * FRAME_SECS)
        self.silence = np.zeros(self.n, dtype=np.int16)
        self.queue: list[Utterance] = []
        self.next_due = time.monotonic() + phase
        self.lateness: list[float] = []
        self.frames_sent = 0
        self.speaking = False
        # A muted microphone sends nothing between utterances (a browser whose mic track
        # is off): its server session has no audio to process.
        self.muted = False

    def say(self, audio: np.ndarray, bounds: tuple[int, int] | None = None) -> Utterance:
        """Queue `audio`; `bounds`: where its words are (else found by level, which a noisy
        recording's noise would stretch to its whole length)."""
        first, last = bounds or speech_bounds(audio)
        utterance = Utterance(audio=audio, speech_first=first, speech_last=last)
        self.queue.append(utterance)
        return utterance

    async def send_next(self) -> None:
        now = time.monotonic()
        self.lateness.append(now - self.next_due)
        if self.queue:
            u = self.queue[0]
            start = u.position
            chunk = u.audio[start : start + self.n]
            if len(chunk) < self.n:
                chunk = np.pad(chunk, (0, self.n - len(chunk)))
            u.position += self.n
            self.speaking = True
            await self.client.send_audio(
                chunk.astype(np.int16).tobytes(), captured_at=self.next_due
            )
            sent = time.monotonic()
            if u.first_speech_sent_at is None and start <= u.speech_first < start + self.n:
                u.first_speech_sent_at = sent
            if start <= u.speech_last - 1 < start + self.n:
                u.last_speech_sent_at = sent
            if u.position >= len(u.audio):
                self.queue.pop(0)
                self.speaking = False
                u.done.set()
        elif not self.muted:
            await self.client.send_audio(self.silence.tobytes(), captured_at=self.next_due)
        self.frames_sent += 1
        self.next_due += FRAME_SECS


class MicrophoneClock:
    """Drives any number of microphones from one task (one wake-up per tick for all)."""

    def __init__(self, tick_secs: float = 0.005):
        self.tick = tick_secs
        self.mics: list[Microphone] = []
        self._task: asyncio.Task | None = None
        self.errors = 0

    def add(self, mic: Microphone) -> Microphone:
        self.mics.append(mic)
        return mic

    def remove(self, mic: Microphone) -> None:
        if mic in self.mics:
            self.mics.remove(mic)

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            for mic in list(self.mics):
                if mic.next_due <= now and not mic.client.closed:
                    try:
                        await mic.send_next()
                    except Exception:
                        self.errors += 1
                        self.remove(mic)
            await asyncio.sleep(self.tick)

    def start(self) -> MicrophoneClock:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def first_audio_after(received, t: float) -> float | None:
    for arrived, _ in received.audio_chunks:
        if arrived > t:
            return arrived
    return None


def audio_between(received, t0: float, t1: float) -> list[float]:
    return [arrived for arrived, _ in received.audio_chunks if t0 < arrived <= t1]


def last_audio_at(received) -> float | None:
    return received.audio_chunks[-1][0] if received.audio_chunks else None


async def wait_quiet(client, quiet_secs: float, timeout: float) -> bool:
    """Wait until no bot audio has arrived for `quiet_secs`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = last_audio_at(client.received)
        if last is None or time.monotonic() - last >= quiet_secs:
            return True
        await asyncio.sleep(0.05)
    return False
