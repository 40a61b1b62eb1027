"""Acoustic echo cancellation of the bot's own voice, referenced to what the bot sent.

Without headphones the microphone hears the bot. The browser's echo canceller removes
most of it when it can (WebRTC's `<audio>` path), but not always (a page that plays PCM
itself, a phone line, a loud room), and Silero VAD fires on what is left. So the server
cancels the echo too: WebRTC's audio processing module (AEC3, from the `livekit` package)
subtracts the bot's own audio from the microphone before anything listens to it, and the
VAD, smart-turn and the STT hear the cleaned signal.

The canceller needs the far end (what the loudspeaker played) as its reference, in step
with the microphone. Here that is the audio the output transport actually sent:

- `BotAudioTap` (after `transport.output()`) writes every bot audio frame that went out
  into an `EchoReference`: one continuous timeline on this server's clock, silence where
  the bot was quiet.
- `EchoCanceller` (right after `transport.input()`) places each microphone frame on the
  same clock by its sample count, anchored at the earliest arrival seen (so a server that
  falls behind and then catches up does not move the alignment), and hands the canceller
  the reference for the same moment. The echo comes back later than that by the network's
  round trip, the client's playout buffer and the room: AEC3 estimates and tracks that
  delay itself up to about 500 ms (measured: bench/RESULTS.md, "Echo cancellation");
  longer paths are brought into its range by our own estimate of the lag
  (`EchoPath` in processors/echo_path.py: the GCC-PHAT peak between microphone and reference).

The same module does WebRTC's noise suppression when asked (`noise_suppression`), so a
deployment can switch from RNNoise to it by setting; it is off by default.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.echo_bound import EchoBound
from processors.echo_path import (
    BLOCK_SECS,
    DoubleTalk,
    EchoPath,
    ResidualEcho,
    log_energy,
)

# The tap sees a frame when the transport has written it and waited out its playing time
# (paced transports send one frame ahead of that): a frame's reference starts a frame's
# duration before the tap saw it, i.e. about when it was sent. A microphone frame is then
# matched with the reference from this long before it, which the tap has surely written by
# the time the frame is processed. The echo of what was sent comes back after the network's
# round trip and the client's playout buffer, which together are longer than this wait;
# AEC3 handles a reference that leads its echo (up to ~500 ms), not one that lags it.
REFERENCE_WAIT_SECS = 0.06
# A frame this much later than the one before it ended starts a new burst on the timeline:
# the output stalled (a paced transport then plays a gap; a client's playout buffer absorbs
# short stalls, longer ones it plays as gaps too).
BURST_GAP_SECS = 0.08
HISTORY_SECS = 4.0
# The reference's level is taken over this long before a frame's echo (the echo's reverb
# and the delay's uncertainty spread it).
REFERENCE_SPAN_SECS = 0.3
# The microphone's clock is anchored at its earliest arrival over this long: a server that
# falls behind for less does not move it, and the client's clock may drift slowly.
ANCHOR_WINDOW_SECS = 10.0
# The echo of the bot's last sound is over this long after it (AEC3's ~0.5 s delay range,
# the room's reverb, a margin): later microphone audio, until the bot sounds again, has
# nothing to cancel and skips the canceller (its two calls were most of its CPU).
ECHO_DIES_SECS = 1.0
# While AEC3 settles, a voice is over the echo when the raw microphone of the last
# `RAW_WINDOW_SECS` stood this far over what the bot's echo explains (the echo alone: up to
# 7 dB, bench/RESULTS.md, "The echo's first seconds").
RAW_VOICE_DB = 10.0
RAW_WINDOW_SECS = 0.3
# ...and a frame of such a voice that AEC3 cut by this much is heard raw instead.
SETTLING_CUT_DB = 6.0


class EchoReference:
    """The bot's sent audio on one clock, at the microphone's sample rate.

    Sample index i is `t0 + i / sample_rate` on `time.monotonic()`; reading an index
    nothing was written to gives silence.
    """

    def __init__(self, sample_rate: int = 16000, *, clock=time.monotonic):
        self.clock = clock
        self.t0 = clock()
        self.reset(sample_rate)

    def reset(self, sample_rate: int) -> None:
        """Start again, empty, at `sample_rate` (the microphone's)."""
        self.sample_rate = sample_rate
        self._ring = np.zeros(int(HISTORY_SECS * sample_rate), dtype=np.int16)
        self._written_until = 0  # one past the last sample written
        self.sound_until = -(1 << 62)  # one past the last sample that was not silence
        self._last_add = -1e9
        self._resampler: soxr.ResampleStream | None = None
        self._source_rate = 0

    def index_at(self, t: float) -> int:
        return int(round((t - self.t0) * self.sample_rate))

    def add(self, pcm: bytes, sample_rate: int, now: float | None = None) -> None:
        """Record a frame the output just sent (`now`: when the tap saw it)."""
        now = self.clock() if now is None else now
        audio = np.frombuffer(pcm, dtype=np.int16)
        if sample_rate != self.sample_rate:
            if sample_rate != self._source_rate:
                self._resampler = soxr.ResampleStream(
                    sample_rate, self.sample_rate, 1, dtype="int16"
                )
                self._source_rate = sample_rate
            audio = self._resampler.resample_chunk(audio)
        duration = len(audio) / self.sample_rate
        if now - self._last_add > BURST_GAP_SECS + duration:
            # A new burst: place it where it started playing, never before what came before.
            start = max(self._written_until, self.index_at(now - duration))
            self._zero(self._written_until, start)
        else:
            start = self._written_until  # within a burst the audio is contiguous
        self._write(start, audio)
        if audio.any():
            self.sound_until = start + len(audio)
        self._last_add = now

    def read(self, end: int, n: int) -> np.ndarray:
        """The `n` samples before index `end`."""
        out = np.zeros(n, dtype=np.int16)
        size = len(self._ring)
        lo = max(end - n, self._written_until - size)
        hi = min(end, self._written_until)
        if hi > lo:
            idx = np.arange(lo, hi) % size
            out[lo - (end - n) : hi - (end - n)] = self._ring[idx]
        return out

    def _zero(self, start: int, end: int) -> None:
        if end > start:
            idx = np.arange(max(start, end - len(self._ring)), end) % len(self._ring)
            self._ring[idx] = 0

    def _write(self, start: int, audio: np.ndarray) -> None:
        if not len(audio):
            return
        audio = audio[-len(self._ring) :]
        idx = np.arange(start, start + len(audio)) % len(self._ring)
        self._ring[idx] = audio
        self._written_until = start + len(audio)


class BotAudioTap(FrameProcessor):
    """After the output transport: every bot audio frame that went out becomes reference."""

    def __init__(self, reference: EchoReference, **kwargs):
        super().__init__(**kwargs)
        self._reference = reference

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            if frame.num_channels == 1 and frame.audio:
                self._reference.add(frame.audio, frame.sample_rate)
        await self.push_frame(frame, direction)


class EchoCanceller(FrameProcessor):
    """Removes the bot's echo from the microphone (AEC3), optionally its noise too.

    `enabled=False` passes audio through untouched. Mono audio at 16 or 48 kHz (the
    module's native rates); anything else passes through with one warning.
    """

    def __init__(
        self,
        reference: EchoReference,
        *,
        enabled: bool = True,
        noise_suppression: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._reference = reference
        self._enabled = enabled
        self._noise_suppression = noise_suppression
        self._apm = None
        self._rate = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._mic_samples = 0  # samples of microphone audio seen
        self._anchor = 0  # reference index of microphone sample 0
        self._recent_offsets: deque[tuple[float, int]] = deque()
        self._path = EchoPath()
        self._residual = ResidualEcho()
        self._double_talk = DoubleTalk()
        self._bound = EchoBound()
        self._warned = False

    @property
    def echo_present(self) -> bool:
        return self._path.present

    @property
    def echo_pending(self) -> bool:
        """The bot has not said enough yet to tell whether the microphone hears it."""
        return self._path.pending

    @property
    def echo_settled(self) -> bool:
        """AEC3 has cancelled enough of the echo for its residue to measure a voice by."""
        return self._residual.settled

    def above_floor_db(self) -> float | None:
        return self._residual.above_floor_db()

    def voice_over_echo(self) -> bool:
        """Whether the microphone's last moments hold more than the bot's own echo (always,
        where there is no echo to cancel). While AEC3 settles, its residue can stand 20 dB
        over its floor: the raw microphone must then stand over the echo the bot's audio
        explains as well (alone, that read 12-55 dB on pure echo in pauses of the bot's
        speech, where its model of the echo's decay falls short). Before the residue has a
        floor at all (AEC3 silences the first echo it has learned), the raw microphone alone
        decides: otherwise the bot talked on over a question asked then, and its echo
        masked the question's last words ("the capital of Franklin?")."""
        if not self._path.present:
            return True
        voice = self._residual.voice_over_echo()
        if voice is None or (voice and not self._residual.settled):
            over = self.over_echo_db(self._reference.clock() - RAW_WINDOW_SECS)
            logger.trace(f"{self}: {over} dB over the echo (raw, AEC3 settling)")
            return over is not None and over >= RAW_VOICE_DB
        logger.trace(f"{self}: {self._residual.above_floor_db()} dB over the echo's residual")
        return voice

    def over_echo_db(self, since: float) -> float | None:
        """How far the raw microphone stood over the bot's echo since `since` (the
        reference's clock), in dB; None where no echo is known."""
        if not self._path.present:
            return None
        return self._bound.over_echo_db(self._path.delay_secs, since)

    @property
    def echo_delay_ms(self) -> int | None:
        """The echo's delay as last measured (for logs and benches)."""
        delay = self._path.delay_secs
        return None if delay is None else round(delay * 1000)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and self._enabled and frame.audio:
            if not self._process(frame):
                return  # less than a block so far: it goes out with the next frame
        elif isinstance(frame, (EndFrame, CancelFrame)):
            self._apm = None
        await self.push_frame(frame, direction)

    def _process(self, frame: InputAudioRawFrame) -> bool:
        if frame.num_channels != 1 or frame.sample_rate not in (16000, 48000):
            if not self._warned:
                logger.warning(
                    f"{self}: {frame.num_channels} ch at {frame.sample_rate} Hz "
                    "is not echo-cancelled"
                )
                self._warned = True
            return True
        if self._apm is None or self._rate != frame.sample_rate:
            self._start(frame.sample_rate)
        mic = np.frombuffer(frame.audio, dtype=np.int16)
        self._place(len(mic))
        audio = np.concatenate([self._pending, mic]) if len(self._pending) else mic.copy()
        block = int(self._rate * BLOCK_SECS)
        whole = len(audio) - len(audio) % block
        out = audio[:whole].copy()
        # Microphone sample k of `audio` is matched with reference index `first + k`.
        wait = int(REFERENCE_WAIT_SECS * self._rate)
        first = self._anchor + self._mic_samples - len(audio) - wait
        for start in range(0, whole, block):
            self._cancel_block(out[start : start + block], first + start)
        if whole and self._path.present:
            # The bot audio whose echo these samples hold: REFERENCE_SPAN_SECS up to the
            # echo's delay before them; its loudest 10 ms says how loud that echo can be.
            delay = int(self._path.delay_secs * self._rate)
            span = self._reference.read(
                first + whole - delay + block * 5, int(REFERENCE_SPAN_SECS * self._rate)
            )
            loudest = max(log_energy(b) for b in span.reshape(-1, block))
            raw = audio[:whole]
            raw_db, clean_db = log_energy(raw), log_energy(out[:whole])
            if self._double_talk.keep_raw(raw_db, clean_db, loudest) or self._voice_cut_settling(
                raw_db, clean_db
            ):
                out[:whole] = raw
            self._residual.add(log_energy(out[:whole]), loudest)
        self._pending = audio[whole:].copy()
        if not whole:
            return False
        frame.audio = out.tobytes()
        frame.num_frames = whole
        return True

    def _voice_cut_settling(self, raw_db: float, clean_db: float) -> bool:
        """In AEC3's first seconds on an echo its suppressor mutes whole stretches of a voice
        that stands well over the echo (a question asked just as the echo path was found came
        out as digital silence 0.1 s at a time, and was heard as "Epital of France"), and the
        double-talk guard has not measured the echo yet. A frame AEC3 cut while the raw
        microphone stands RAW_VOICE_DB over the echo the bot's audio explains, and what AEC3
        left is not plainly its residue, goes on raw: the echo in it is at least that far
        under the voice. (The raw bar alone passed echo 12 dB over it at a 0.35 s delay.)"""
        if self._residual.settled or raw_db - clean_db < SETTLING_CUT_DB:
            return False
        if self._residual.voice_over_echo() is False:
            return False  # what AEC3 left is no more than its residue: echo
        over = self.over_echo_db(self._reference.clock() - RAW_WINDOW_SECS)
        return over is not None and over >= RAW_VOICE_DB

    def _start(self, rate: int) -> None:
        from livekit import rtc

        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=True, noise_suppression=self._noise_suppression, high_pass_filter=True
        )
        self._rtc = rtc
        self._rate = rate
        if rate != self._reference.sample_rate:
            logger.warning(f"{self}: echo reference reset for a {rate} Hz microphone")
            self._reference.reset(rate)
        self._pending = np.zeros(0, dtype=np.int16)

    def _place(self, n: int) -> None:
        """Advance the microphone's clock by `n` samples; its anchor is the earliest arrival
        of the last ANCHOR_WINDOW_SECS (a late arrival says the server is behind, not the mic)."""
        now = self._reference.clock()
        self._mic_samples += n
        offset = self._reference.index_at(now) - self._mic_samples
        recent = self._recent_offsets
        while recent and recent[-1][1] >= offset:  # monotonic queue: a sliding minimum
            recent.pop()
        recent.append((now, offset))
        while now - recent[0][0] > ANCHOR_WINDOW_SECS:
            recent.popleft()
        self._anchor = recent[0][1]

    def _cancel_block(self, mic: np.ndarray, index: int) -> None:
        n = len(mic)
        shift = int(self._path.shift_secs * self._rate)
        ref = self._reference.read(index + n - shift, n)
        sent = self._reference.read(index + n, n)
        self._path.add(mic, sent)
        self._bound.add(self._reference.clock(), log_energy(mic), log_energy(sent))
        if not self._noise_suppression and (
            index - shift - self._reference.sound_until > ECHO_DIES_SECS * self._rate
            or not (self._path.present or self._path.pending)
        ):
            # No echo can be in it, or the microphone hears none of the bot (headphones, the
            # browser's own canceller): the microphone as it is, and AEC3 not run at all.
            return
        rtc = self._rtc
        # While an echo is heard or may be, AEC3 adapts on every frame of it.
        self._apm.process_reverse_stream(rtc.AudioFrame(ref.tobytes(), self._rate, 1, n))
        near = rtc.AudioFrame(mic.tobytes(), self._rate, 1, n)
        self._apm.process_stream(near)
        if self._path.present or self._noise_suppression:
            mic[:] = np.frombuffer(bytes(near.data), dtype=np.int16)
