"""How far the raw microphone rose over what the bot's echo can explain (`EchoBound`):
processors/echo_cancel.py asks it of speech it could not judge by AEC3's residual.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from processors.echo_path import BLOCK_SECS, SILENT_DB


class EchoBound:
    """How far the raw microphone rose over what the bot's echo explains.

    For speech the VAD heard before the echo path was known (the bot's first words, which
    nothing cancelled yet), judged once it is. The echo of block i can be no louder than the
    loudest reference block `delay` earlier (within `early_secs`..`late_secs` of it: the
    measured delay is the direct path's, the room adds later ones), its reverb decaying at
    most `decay_db` per 10 ms block after (a running maximum); the echo path's gain is the
    median of the microphone less that over the last `history_secs` of blocks an echo was
    due in (robust to anyone talking over less than half of it). Where no echo is due, the
    microphone is measured against the room's quiet (its `floor_percentile`). The echo alone
    stays within a few dB of its gain; a voice over it stands well above (a Geigel-style
    double-talk test, the gain measured instead of assumed). The statistic of a segment is
    its `robust_rank`-th highest block, so one stray block does not make a voice.
    """

    def __init__(
        self, *, history_secs=4.0, decay_db=1.5, early_secs=0.03, late_secs=0.08,
        floor_percentile=10, smooth_blocks=3, min_secs=0.3, robust_rank=3,
    ):
        size = int(history_secs / BLOCK_SECS)
        self._times: deque[float] = deque(maxlen=size)
        self._mic: deque[float] = deque(maxlen=size)
        self._ref: deque[float] = deque(maxlen=size)
        self._decay = decay_db
        self._early = int(early_secs / BLOCK_SECS)
        self._late = int(late_secs / BLOCK_SECS)
        self._floor_percentile = floor_percentile
        self._smooth = smooth_blocks
        self._min_blocks = int(min_secs / BLOCK_SECS)
        self._rank = robust_rank

    def add(self, now: float, mic_db: float, reference_db: float) -> None:
        """One 10 ms block: the raw microphone and the reference sent at the same moment."""
        self._times.append(now)
        self._mic.append(mic_db)
        self._ref.append(reference_db)

    def over_echo_db(self, delay_secs: float, since: float) -> float | None:
        """How far the microphone stood over the echo since `since`, in dB (None: too
        little of the bot heard to know its echo's gain, or nothing since)."""
        times = np.array(self._times)
        segment = times >= since
        if not segment.any():
            return None
        power = 10 ** (np.array(self._mic) / 10)
        mic = 10 * np.log10(np.convolve(power, np.ones(self._smooth) / self._smooth, "same"))
        # Block i's echo comes from reference blocks i - delay - late .. i - delay + early.
        width = self._early + self._late + 1
        ref = np.concatenate([np.full(width - 1, SILENT_DB - 20), np.array(self._ref)])
        loudest = np.lib.stride_tricks.sliding_window_view(ref, width).max(axis=1)
        shift = max(0, int(round(delay_secs / BLOCK_SECS)) - self._early)
        due = np.full(len(mic), SILENT_DB - 20)
        direct = np.full(len(mic), SILENT_DB - 20)
        level = SILENT_DB - 20
        for i in range(len(due) - shift):
            level = max(loudest[i], level - self._decay)
            due[i + shift] = level
            direct[i + shift] = loudest[i]
        echo = due > SILENT_DB
        # The gain from the blocks whose echo is at its loudest, not in a reverb tail.
        loud = echo & (direct >= due - 3.0)
        if loud.sum() < self._min_blocks:
            return None
        gain = float(np.median((mic - due)[loud]))
        floor = float(np.percentile(mic, self._floor_percentile))
        over = np.where(echo, mic - due - gain, mic - floor)[segment]
        return float(np.sort(over)[-min(self._rank, len(over))])
