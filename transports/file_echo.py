"""The bot's own voice in a file conversation's microphone, as a laptop without headphones
hears it: what the bot played, `delay_secs` later and `gain_db` quieter."""

from __future__ import annotations

import time

import numpy as np
import soxr


class PlayedEcho:
    """Mixes the bot's played audio into microphone frames.

    Each microphone frame is captured at its own clock's time (the first frame's time plus
    the frames since), and hears what the bot was playing `delay_secs` before that.
    """

    def __init__(self, gain_db: float, delay_secs: float, mic_rate: int):
        self._gain = 10 ** (gain_db / 20)
        self._delay = delay_secs
        self._mic_rate = mic_rate
        self._resampler: soxr.ResampleStream | None = None
        self._mic_started: float | None = None
        self._mic_samples = 0

    def mix(self, pcm: bytes, played: bytes, rate: int, began: float | None) -> bytes:
        """`pcm` (int16 at the microphone's rate) with the echo of `played` (int16 at `rate`,
        the output's timeline since `began`) mixed in."""
        mic = np.frombuffer(pcm, dtype=np.int16)
        if self._mic_started is None:
            self._mic_started = time.monotonic()
        captured = self._mic_started + self._mic_samples / self._mic_rate
        self._mic_samples += len(mic)
        if began is None or not rate:
            return pcm
        if self._resampler is None:
            self._resampler = soxr.ResampleStream(rate, self._mic_rate, 1, dtype="float32")
        n = len(mic) * rate // self._mic_rate
        start = int((captured - self._delay - began) * rate)
        segment = np.zeros(n, dtype=np.float32)
        lo, hi = max(start, 0), min(start + n, len(played) // 2)
        if hi > lo:
            heard = np.frombuffer(played[2 * lo : 2 * hi], dtype=np.int16)
            segment[lo - start : hi - start] = heard
        echo = self._resampler.resample_chunk(segment * self._gain)
        out = mic.astype(np.float32)
        out[: len(echo)] += echo[: len(out)]
        return np.clip(out, -32768, 32767).astype(np.int16).tobytes()
