"""The capacity bench's verdict: what "keeps real time" means for one level, its bounds taken
from the measured run-to-run spread, and the ramp of levels by bisection.

A level N keeps real time when, over all its sessions:
- every turn got its answer and no session was refused or closed;
- the bot's audio played without a gap: the client plays it as the browser does (an 80 ms
  pre-buffer, re-buffering after an underrun: web/client's `PcmPlayer`) and counts underruns;
- the p95 added voice-to-voice (each turn against its question's median at N=1) is under a
  bound taken from the spread, and so is the input backlog's growth;
- the server (and its session processes) used less than ~85 % of the machine's cores.

The spread: N=1 is run twice. The second run judged against the first's baselines shows
what "added latency" and "backlog growth" read with no added load at all; a level fails only
when it reads clearly above that (`Bounds.from_spread`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.common import p50, p95

# What the browser's player waits for before it starts and after an underrun
# (web/client/src/worklets/audio-processors.js, `prebufferMs`).
PREBUFFER_SECS = 0.08
CPU_LIMIT_OF_CORES = 0.85
# The bounds are never tighter than these, however quiet the repeat of N=1 was: below them a
# change is too small to hear (added latency) or to matter over a session (backlog).
ADDED_P95_FLOOR_MS = 50.0
BACKLOG_GROWTH_FLOOR_MS = 20.0
# A level fails when its figure is more than this many times the repeat's reading.
SPREAD_FACTOR = 2.0
MAX_LEVEL = 64
SERVER_STAGES = ("vad", "stt", "turn", "llm_ttft", "tts_ttfb", "voice_to_voice")


def playout_underruns(chunks: list[tuple[float, int]], bytes_per_sec: float,
                      prebuffer: float = PREBUFFER_SECS) -> tuple[int, float]:
    """Underruns (and the silence they cost, in seconds) of the bot's audio as a browser plays
    it: `chunks` are (arrival time, bytes) of one answer. Playback starts once `prebuffer`
    seconds are queued or have been waited for; an underrun is the queue running dry while
    more of the answer is still to come."""
    underruns, silence = 0, 0.0
    playing, dry_at = False, 0.0  # while playing: when the queued audio runs out
    waiting_since, buffered = None, 0.0  # while not playing
    for arrived, size in sorted(chunks):
        secs = size / bytes_per_sec
        if not playing and waiting_since is not None and arrived >= waiting_since + prebuffer:
            # It started on its own after waiting `prebuffer` with what it had.
            playing, dry_at = True, waiting_since + prebuffer + buffered
        if playing and arrived > dry_at:
            underruns += 1
            silence += arrived - dry_at
            playing, waiting_since, buffered = False, None, 0.0
        if playing:
            dry_at += secs
            continue
        if waiting_since is None:
            waiting_since = arrived
        buffered += secs
        if buffered >= prebuffer:
            playing, dry_at = True, arrived + buffered
    return underruns, silence


def baselines(level: dict) -> dict[int, float]:
    """Each question's median voice-to-voice at N=1. Per question: where the client's last
    speech sample falls against the VAD's stop differs by question (by ~80 ms among these
    four, the same on the server's clock), so against one median for all, the p95 of a
    run moved with which questions it happened to ask."""
    by_question: dict[int, list[float]] = {}
    for t in level["turns"]:
        if t["v2v_ms"] is not None and not t.get("held"):
            by_question.setdefault(t["question"], []).append(t["v2v_ms"])
    return {q: p50(v) for q, v in by_question.items()}


def backlog_growth(turns: list[dict]) -> float | None:
    """Median input lag over the last third of a level's turns − over the first third: a
    server that falls behind the 20 ms frames shows a growing lag."""
    lags = [t["input_lag_ms"] for t in turns if t["input_lag_ms"] is not None]
    third = len(lags) // 3
    return p50(lags[-third:]) - p50(lags[:third]) if third else None


@dataclass(frozen=True)
class Bounds:
    added_p95_ms: float = ADDED_P95_FLOOR_MS
    growth_ms: float = BACKLOG_GROWTH_FLOOR_MS
    spread_added_p95_ms: float | None = None
    spread_growth_ms: float | None = None

    @classmethod
    def from_spread(cls, first: dict, repeat: dict, baseline_ms: dict[int, float]) -> Bounds:
        """From two runs of N=1: the repeat's p95 added latency against the first's
        baselines, and the larger of the two runs' backlog growths (either sign)."""
        added = _added(repeat, baseline_ms)
        spread_added = p95([abs(a) for a in added]) if added else None
        growths = [abs(g) for g in (backlog_growth(first["turns"]), backlog_growth(repeat["turns"]))
                   if g is not None]
        spread_growth = max(growths) if growths else None
        return cls(
            added_p95_ms=max(ADDED_P95_FLOOR_MS, SPREAD_FACTOR * (spread_added or 0.0)),
            growth_ms=max(BACKLOG_GROWTH_FLOOR_MS, SPREAD_FACTOR * (spread_growth or 0.0)),
            spread_added_p95_ms=spread_added,
            spread_growth_ms=spread_growth,
        )


def _added(level: dict, baseline_ms: dict[int, float]) -> list[float]:
    return [t["v2v_ms"] - baseline_ms[t["question"]] for t in level["turns"]
            if t["v2v_ms"] is not None and not t.get("held") and t["question"] in baseline_ms]


def judge(level: dict, baseline_ms: dict[int, float], bounds: Bounds) -> dict:
    turns = level["turns"]
    v2v = [t["v2v_ms"] for t in turns if t["v2v_ms"] is not None and not t.get("held")]
    lags = [t["input_lag_ms"] for t in turns if t["input_lag_ms"] is not None]
    added = _added(level, baseline_ms)
    growth = backlog_growth(turns)
    failed = sum(1 for t in turns if t["v2v_ms"] is None)
    underruns = sum(t.get("underruns", 0) for t in turns)
    cores = os.cpu_count() or 1
    verdict = {
        "turns": len(turns),
        "v2v_p50": p50(v2v),
        "v2v_p95": p95(v2v),
        "added_p95": p95(added),
        "lag_p50": p50(lags),
        "growth": growth,
        "underruns": underruns,
        "underrun_ms": 1000 * sum(t.get("underrun_secs", 0.0) for t in turns),
        "failed": failed,
        "held": sum(1 for t in turns if t.get("held")),
        "cpu_per_session": 100 * level["server_cpu"] / level["n"],
        "server_cpu": 100 * level["server_cpu"],
        "client_cpu": [100 * c for c in level["client_cpu"] if c is not None],
        "lateness_p95": p95(level["lateness_ms"]),
        # The server's own clock per stage (turn metrics): which one grows with N.
        "stages_p95": {
            stage: p95([t["stages_ms"][stage] for t in turns if stage in t.get("stages_ms", {})])
            for stage in SERVER_STAGES
        },
    }
    reasons = []
    if not turns or verdict["added_p95"] is None:
        reasons.append("no answered turn")
    elif verdict["added_p95"] >= bounds.added_p95_ms:
        reasons.append(f"added p95 {verdict['added_p95']:.0f} ≥ {bounds.added_p95_ms:.0f} ms")
    if growth is not None and growth >= bounds.growth_ms:
        reasons.append(f"backlog growth {growth:.0f} ≥ {bounds.growth_ms:.0f} ms")
    if underruns:
        reasons.append(f"{underruns} underruns")
    if level["server_cpu"] >= CPU_LIMIT_OF_CORES * cores:
        reasons.append(f"server CPU {verdict['server_cpu']:.0f} % ≥ {CPU_LIMIT_OF_CORES:.0%} "
                       f"of {cores} cores")
    lost = failed + level["refused"] + level["closed"]
    if lost:
        reasons.append(f"{lost} unanswered/refused/closed")
    verdict["reasons"] = reasons
    verdict["ok"] = not reasons
    # The client shares the machine: say when it, not the server, was the one behind.
    verdict["client_bound"] = bool(
        (verdict["lateness_p95"] or 0) > 10 or any(c > 80 for c in verdict["client_cpu"])
    )
    return verdict


def next_level(passed: list[int], failed: list[int], max_level: int = MAX_LEVEL) -> int | None:
    """Doubling from the largest level that kept real time until one fails (or `max_level`),
    then bisection between the largest pass and the smallest failure; None when done."""
    best = max(passed, default=0)
    worst = min(failed, default=None)
    if worst is None:
        return None if best >= max_level else min(max(1, 2 * best), max_level)
    middle = (best + worst) // 2
    return None if middle <= best else middle
