"""The capacity bench's verdict (bench/capacity_verdict.py): the browser-like playout that
counts underruns of the bot's audio, the bounds from a repeated N=1, and the level ramp."""

from __future__ import annotations

import os

from bench.capacity_verdict import Bounds, judge, next_level, playout_underruns

RATE = 16000 * 2  # bytes per second of 16 kHz 16-bit mono
CHUNK = RATE // 25  # 40 ms of audio


def paced(start: float, n: int, late: dict[int, float] | None = None) -> list[tuple[float, int]]:
    """n 40 ms chunks sent in real time from `start`, as Pipecat's output transport paces
    them; `late` delays chunk i by that many seconds (and every chunk after it with it)."""
    chunks, delay = [], 0.0
    for i in range(n):
        delay += (late or {}).get(i, 0.0)
        chunks.append((start + 0.04 * i + delay, CHUNK))
    return chunks


def test_audio_sent_in_real_time_plays_without_a_gap():
    assert playout_underruns(paced(10.0, 50), RATE) == (0, 0.0)


def test_jitter_the_prebuffer_absorbs_is_no_underrun():
    # Playback starts with two chunks (80 ms) queued, so one is left when the next is due.
    assert playout_underruns(paced(10.0, 50, late={20: 0.035}), RATE)[0] == 0


def test_a_stall_longer_than_the_prebuffer_is_one_underrun_of_its_length():
    underruns, silence = playout_underruns(paced(10.0, 50, late={20: 0.2}), RATE)
    assert underruns == 1
    assert abs(silence - 0.16) < 1e-6  # 200 ms late, 40 ms of it still queued


def test_a_sender_that_drifts_behind_real_time_underruns_again_and_again():
    slow = [(10.0 + 0.05 * i, CHUNK) for i in range(100)]  # 40 ms of audio every 50 ms
    assert playout_underruns(slow, RATE)[0] >= 5


def test_a_short_first_chunk_then_a_stall_is_heard():
    # Playback starts after waiting the pre-buffer with 40 ms queued, then runs dry.
    chunks = [(10.0, CHUNK), (10.3, CHUNK), (10.34, CHUNK)]
    assert playout_underruns(chunks, RATE)[0] == 1


def _level(n, v2vs, lags, cpu=0.1):
    turns = [{"question": 0, "v2v_ms": v, "input_lag_ms": lag, "underruns": 0}
             for v, lag in zip(v2vs, lags)]
    return {"n": n, "turns": turns, "server_cpu": cpu, "client_cpu": [0.02], "lateness_ms": [5.0],
            "refused": 0, "closed": 0}


def test_the_bounds_follow_the_spread_of_a_repeated_n1_never_below_their_floors():
    quiet = Bounds.from_spread(_level(1, [600] * 30, [300] * 30),
                               _level(1, [610] * 30, [300] * 30), {0: 600.0})
    assert (quiet.added_p95_ms, quiet.growth_ms) == (50.0, 20.0)
    noisy = Bounds.from_spread(_level(1, [600] * 30, [300] * 30),
                               _level(1, [600] * 27 + [640] * 3,
                                      [300] * 10 + [300] * 10 + [340] * 10), {0: 600.0})
    assert noisy.spread_added_p95_ms == 40.0 and noisy.added_p95_ms == 80.0
    assert noisy.spread_growth_ms == 40.0 and noisy.growth_ms == 80.0


def test_a_level_fails_on_each_criterion_and_says_which():
    bounds, baseline = Bounds(), {0: 600.0}
    assert judge(_level(4, [620] * 30, [300] * 30), baseline, bounds)["ok"]
    slow = judge(_level(4, [700] * 30, [300] * 30), baseline, bounds)
    assert not slow["ok"] and slow["reasons"][0].startswith("added p95")
    behind = judge(_level(4, [620] * 30, [300] * 10 + [320] * 10 + [400] * 10), baseline, bounds)
    assert not behind["ok"] and behind["reasons"][0].startswith("backlog growth")
    gaps = _level(4, [620] * 30, [300] * 30)
    gaps["turns"][5]["underruns"] = 1
    assert judge(gaps, baseline, bounds)["reasons"] == ["1 underruns"]
    busy = judge(_level(4, [620] * 30, [300] * 30, cpu=0.9 * (os.cpu_count() or 1)),
                 baseline, bounds)
    assert not busy["ok"] and busy["reasons"][0].startswith("server CPU")


def test_levels_double_until_one_fails_then_bisect():
    passed, failed, asked = [1], [], []
    capacity = 11
    while (n := next_level(passed, failed)) is not None:
        asked.append(n)
        (passed if n <= capacity else failed).append(n)
    assert asked == [2, 4, 8, 16, 12, 10, 11]
    assert max(passed) == capacity


def test_the_ramp_stops_at_its_ceiling():
    assert next_level([1, 2, 4, 8, 16, 32, 64], []) is None
    assert next_level([1, 2, 4, 8, 16, 32], [], max_level=40) == 40
