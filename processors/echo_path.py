"""What the echo canceller learns about the echo: whether the microphone hears the bot at
all and how late (`EchoPath`), and what is left of it after cancellation, to tell a voice
over it from its residue (`ResidualEcho`), when the canceller took a voice for echo
(`DoubleTalk`); processors/echo_bound.py measures what the raw microphone held beyond it.
processors/echo_cancel.py uses them.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from loguru import logger

BLOCK_SECS = 0.01  # the audio processing module works on 10 ms blocks


class EchoPath:
    """Whether the microphone hears the bot at all, and how late.

    Every `period_secs` (`absent_period_secs` once no echo was found in the bot's first
    `decide_secs` of speech: headphones, or the browser's own canceller, leave none, and the
    estimate is most of the canceller's CPU then) with at least `min_active_secs` of the
    bot's speech in the last `span_secs`, the raw microphone and the reference (both at
    8 kHz) are cross-correlated with the phase transform (GCC-PHAT) over lags 0..`max_secs`.
    An echo makes a sharp peak,
    many times the correlation's RMS, at the same lag every time; two voices that merely
    speak at the same time do not (envelope correlation did: two utterances that start a
    second apart correlate at that second). Bands more than `ref_band_db` under the
    reference's loudest carry none of its echo and do not vote: a narrow-band sound (a tone,
    a chime) is all onset there, which lined up with a question's onset after it.

    Two peaks of `peak_ratio` in a row turn `present` on within the bot's first second: a
    pause of the bot (held by a barge-in) must not keep the echo unknown, or every early
    residual is taken for the user. So do `steady_estimates` in a row of `steady_ratio` at
    one lag: a voice over the echo (a question over the greeting) holds its peak at 9-12×
    for seconds, while two voices with no echo made no three such peaks at one lag over
    7.6× (bench/RESULTS.md, "The echo path under double talk"). Until then, for the bot's
    first `decide_secs` of speech (`max_decide_secs` once a peak of `keep_ratio` was seen),
    the answer is `pending`. It goes off again after
    `absent_secs` of the bot's speech without a peak of `keep_ratio` (headphones put on,
    the browser's own canceller took over). A lag beyond `aec_range_secs` also shifts the
    reference by all but `keep_secs` of it, so AEC3 is left a delay it tracks itself.

    Why gate on it: until AEC3 has heard an echo it assumes the worst (an echo as loud as
    the bot), so with no echo at all (headphones, a fake microphone, a browser that
    already cancelled it) it suppresses whoever talks over the bot by 5-30 dB (measured:
    bench/RESULTS.md). Where there is no echo, nothing needs cancelling.
    """

    RATE = 8000

    def __init__(
        self,
        *,
        span_secs: float = 2.0,
        min_active_secs: float = 0.5,
        max_secs: float = 1.5,
        aec_range_secs: float = 0.5,
        keep_secs: float = 0.2,
        period_secs: float = 0.25,
        absent_period_secs: float = 1.0,
        peak_ratio: float = 12.0,
        keep_ratio: float = 8.0,
        steady_ratio: float = 9.0,
        steady_estimates: int = 3,
        absent_secs: float = 6.0,
        decide_secs: float = 2.0,
        max_decide_secs: float = 6.0,
        ref_band_db: float = 60.0,
    ):
        self._span = int(span_secs * self.RATE)
        self._max_lag = int(max_secs * self.RATE)
        self._aec_range = aec_range_secs
        self._keep = keep_secs
        self._period_blocks = int(period_secs / BLOCK_SECS)
        self._absent_period_blocks = int(absent_period_secs / BLOCK_SECS)
        self._peak_ratio = peak_ratio
        self._keep_ratio = keep_ratio
        self._steady_ratio = steady_ratio
        self._min_active = int(min_active_secs / BLOCK_SECS)
        self._absent_estimates = int(absent_secs / period_secs)
        size = self._span + self._max_lag
        # Rings (oldest at `_next`): shifting 3.5 s of history per 10 ms block cost more
        # than the estimates.
        self._mic = np.zeros(size, dtype=np.float32)
        self._ref = np.zeros(size, dtype=np.float32)
        self._next = 0
        self._active: deque[bool] = deque(maxlen=int(span_secs / BLOCK_SECS))
        self._fft = 1 << int(np.ceil(np.log2(2 * size)))
        self._blocks = 0
        self._bot_blocks = 0  # blocks of the bot's speech heard so far
        self._decide_blocks = int(decide_secs / BLOCK_SECS)
        self._max_decide_blocks = int(max_decide_secs / BLOCK_SECS)
        self._best_ratio = 0.0  # the sharpest peak while no echo path was known
        self._ref_band = 10 ** (-ref_band_db / 10)
        self._misses = 0
        self._peaks: deque[tuple[int, float]] = deque(maxlen=steady_estimates)  # (lag, ratio)
        self.present = False
        self.shift_secs = 0.0  # the reference is read this much earlier
        self.delay_secs: float | None = None

    @property
    def pending(self) -> bool:
        """Too little of the bot heard yet to say whether the microphone hears it: under
        `decide_secs` of its speech, or under `max_decide_secs` once a peak of `keep_ratio`
        was seen. A voice over the greeting can keep its echo from peaking twice (peaks of
        11×, 7.9×, 6.8×), and an echo judged absent went uncancelled into the first seconds
        of the answer, where its words became turns; with no echo such single peaks come
        too (up to 14×), which only makes the verdict wait."""
        if self.present:
            return False
        heard = self._bot_blocks
        return heard < self._decide_blocks or (
            self._best_ratio >= self._keep_ratio and heard < self._max_decide_blocks
        )

    def add(self, mic_block: np.ndarray, ref_block: np.ndarray) -> None:
        """One 10 ms block of each, at 16 kHz (or any even multiple of 8 kHz)."""
        n = self._push(self._mic, mic_block)
        self._push(self._ref, ref_block)
        self._next = (self._next + n) % len(self._mic)
        active = log_energy(ref_block) > SILENT_DB
        self._active.append(active)
        self._bot_blocks += int(active)
        self._blocks += 1
        period = self._period_blocks if self.present or self.pending else self._absent_period_blocks
        if self._blocks % period == 0:
            self._estimate()

    def _push(self, history: np.ndarray, block: np.ndarray) -> int:
        """Write the block, averaged down to 8 kHz, at `_next`; how many samples that is."""
        step = max(1, len(block) * 100 // self.RATE)
        down = np.add.reduce(block.reshape(-1, step), axis=1, dtype=np.float32) / step
        first = min(len(down), len(history) - self._next)  # up to the ring's end, then wrap
        history[self._next : self._next + first] = down[:first]
        history[: len(down) - first] = down[first:]
        return len(down)

    def _ordered(self, history: np.ndarray) -> np.ndarray:
        return np.concatenate((history[self._next :], history[: self._next]))

    def _estimate(self) -> None:
        if sum(self._active) < self._min_active:
            return
        ref = self._ordered(self._ref)
        mic = np.zeros(len(ref), dtype=np.float32)
        mic[-self._span :] = self._ordered(self._mic)[-self._span :]
        spectrum = np.fft.rfft(ref, self._fft)
        cross = np.fft.rfft(mic, self._fft) * np.conj(spectrum)
        cross /= np.abs(cross) + 1e-9
        power = np.abs(spectrum) ** 2
        cross[power < power.max() * self._ref_band] = 0.0
        correlation = np.fft.irfft(cross, self._fft)[: self._max_lag + 1]
        margin = int(0.01 * self.RATE)  # peaks at the very ends of the range are artefacts
        lag = margin + int(np.argmax(correlation[margin:-margin]))
        ratio = correlation[lag] / (np.sqrt(np.mean(correlation**2)) + 1e-12)
        sharp = ratio >= self._peak_ratio
        if not self.present:
            self._best_ratio = max(self._best_ratio, float(ratio))
        repeated = self._repeated(lag, ratio, margin)
        late = self._decide_blocks // 2 <= self._bot_blocks < 2 * self._decide_blocks
        if late and not self.present:  # known within about a second as a rule: why not yet
            logger.debug(
                f"No echo path yet: best lag {lag / self.RATE * 1000:.0f} ms, "
                f"{ratio:.1f}× the correlation's RMS"
            )
        if self.present and not sharp and ratio >= self._keep_ratio:
            if abs(lag - self.delay_secs * self.RATE) <= margin:
                self._misses = 0  # still the echo, less sharp (the user talking over it)
                return
        if repeated:
            self._misses = 0
            self.delay_secs = lag / self.RATE
            if not self.present:
                logger.debug(
                    f"Echo heard ({self.delay_secs * 1000:.0f} ms late): "
                    "the microphone is echo-cancelled"
                )
            self.present = True
            wanted = self.delay_secs - self._keep if self.delay_secs > self._aec_range else 0.0
            if abs(wanted - self.shift_secs) > 0.05:  # move only on a clear change
                logger.debug(
                    f"Echo {self.delay_secs * 1000:.0f} ms late: "
                    f"reference shifted by {wanted * 1000:.0f} ms"
                )
                self.shift_secs = wanted
        elif not sharp and self.present:
            self._misses += 1
            if self._misses >= self._absent_estimates:
                logger.debug("No echo heard for a while: the microphone passes uncancelled")
                self.present = False


    def _repeated(self, lag: int, ratio: float, margin: int) -> bool:
        """Whether this peak and the last ones say the same echo: two sharp, or all steady."""
        previous = self._peaks[-1] if self._peaks else None
        self._peaks.append((lag, ratio))
        if previous and min(ratio, previous[1]) >= self._peak_ratio:
            return abs(lag - previous[0]) <= margin
        lags = [lag for lag, _ in self._peaks]
        return (
            len(self._peaks) == self._peaks.maxlen
            and min(r for _, r in self._peaks) >= self._steady_ratio
            and max(lags) - min(lags) <= margin
        )


SILENT_DB = -60.0
# AEC3 silences a frame it is sure holds only echo down to about this (80 dB under full scale).
SILENCED_DB = -75.0


class ResidualEcho:
    """What is left of the echo after cancellation, to tell it from a voice over it.

    While the bot's echo is due and an echo path is present, the cancelled microphone's
    level relative to the reference's loudest recent moment is tracked per 20 ms frame.
    The residual's floor is the 30th percentile over the last `history_secs` of the frames
    AEC3 left any sound in (those it silenced entirely say nothing about the residual; the
    bot talks far more than the user does). A voice is over the echo when the last
    `window_secs` sit `margin_db` above that floor; in the first `onset_secs` of the echo
    after a silence, while AEC3 settles on the new speech, `onset_margin_db` more.

    Until AEC3 has cancelled `settle_secs` of an echo, what it leaves is no measure of
    anything: its garbled residue stood up to 21 dB over that floor in an answer's first
    five seconds (bench/RESULTS.md, "The echo's first seconds"). `settled` says when the
    floor can be trusted.
    """

    def __init__(
        self,
        *,
        window_secs=0.3,
        history_secs=5.0,
        margin_db=18.0,
        onset_secs=0.6,
        onset_margin_db=10.0,
        settle_secs=8.0,
        rate_hz=50,
    ):
        self._recent: deque[float] = deque(maxlen=max(1, int(window_secs * rate_hz)))
        self._history: deque[float] = deque(maxlen=int(history_secs * rate_hz))
        self._margin = margin_db
        self._onset_frames = int(onset_secs * rate_hz)
        self._onset_margin = onset_margin_db
        self._settle_frames = int(settle_secs * rate_hz)
        self._floor: float | None = None
        self._frames = 0
        self._since_quiet = 0

    def add(self, clean_db: float, reference_db: float) -> None:
        if reference_db <= SILENT_DB:
            self._recent.clear()  # no echo due: nothing to tell a voice from
            self._since_quiet = 0
            return
        self._since_quiet += 1
        relative = clean_db - reference_db
        self._recent.append(relative)
        if clean_db > SILENCED_DB:
            self._history.append(relative)
        self._frames += 1
        if self._frames % 25 == 0 and len(self._history) >= 25:
            self._floor = float(np.percentile(self._history, 30))

    @property
    def settled(self) -> bool:
        return self._frames >= self._settle_frames

    def above_floor_db(self) -> float | None:
        """How far the last moments sit above the residual's floor (None: nothing to compare)."""
        if self._floor is None or not self._recent:
            return None
        return float(np.mean(self._recent)) - self._floor

    def voice_over_echo(self) -> bool | None:
        """None: an echo is due and its residual is not known yet."""
        if not self._recent:
            return True  # no echo due now
        above = self.above_floor_db()
        if above is None:
            return None
        margin = self._margin + (
            self._onset_margin if self._since_quiet < self._onset_frames else 0.0
        )
        return above >= margin


class DoubleTalk:
    """When AEC3 cut the user's voice along with the echo, the raw microphone goes on.

    AEC3's suppressor now and then takes a voice that stands well over the echo for echo and
    cuts it by ~20 dB (measured live: -16 dBFS of voice over a ~-33 dBFS echo came out at
    -36), and the VAD then hears nothing of a question asked over the bot. Relative to the
    reference's loudest recent moment, the echo alone never rises much above the echo
    path's gain: the `percentile` of that over the frames the canceller cut by `echo_cut_db`
    or more (surely echo) in the last `history_secs` is how high the echo reaches. A frame
    whose raw level stands `margin_db` over that holds a voice that much louder than the
    echo: if the canceller took more than `cut_db` off it, the raw frame (the echo at least
    `margin_db` under the voice) is the better signal to listen to.
    """

    def __init__(
        self, *, margin_db=10.0, cut_db=6.0, echo_cut_db=10.0, percentile=90, history_secs=5.0,
        min_secs=0.5, rate_hz=50,
    ):
        self._history: deque[float] = deque(maxlen=int(history_secs * rate_hz))
        self._min_frames = int(min_secs * rate_hz)
        self._margin, self._cut, self._echo_cut = margin_db, cut_db, echo_cut_db
        self._percentile = percentile
        self._echo_top: float | None = None
        self._added = 0

    def keep_raw(self, raw_db: float, clean_db: float, reference_db: float) -> bool:
        if reference_db <= SILENT_DB:
            return False
        relative, cut = raw_db - reference_db, raw_db - clean_db
        if cut >= self._echo_cut:
            self._history.append(relative)
            self._added += 1
            if self._added % 5 == 0 and len(self._history) >= self._min_frames:
                self._echo_top = float(np.percentile(self._history, self._percentile))
        return (
            self._echo_top is not None
            and relative >= self._echo_top + self._margin
            and cut >= self._cut
        )


def log_energy(block: np.ndarray) -> float:
    x = block.astype(np.float64)
    return max(-80.0, 10 * np.log10(float(np.dot(x, x)) / max(1, len(x)) / 32768.0**2 + 1e-10))
