"""Capacity: how many live sessions one server process (or one per core) keeps in real time.

    .venv/bin/python -m bench.capacity              # N = 1 twice, 2, 4, 8… then bisection
    .venv/bin/python -m bench.capacity --levels 1,3 # those levels only (after N=1's repeat)
    .venv/bin/python -m bench.capacity --nodes 2    # two server processes sharing Redis
    .venv/bin/python -m bench.capacity --echo-db -20  # the bot's echo in every microphone
    .venv/bin/python -m bench.capacity --smoke      # N = 1, 2 for a few seconds

The server (`python -m tests.support.fakes serve`: `bot serve` with stand-ins) runs with the
instant fake STT, LLM and TTS and everything else real: WebSocket transport, RNNoise denoise,
Silero VAD, smart-turn v3, echo cancellation, context aggregation, metrics. N clients, driven
from one asyncio process (`--client-procs 2` splits them over two), each stream a live
microphone in real time (20 ms frames, silence between questions, random phase): a spoken
question, then silence until the answer has played, a pause, the next question
(bench/capacity_clients.py).

The fake bot answers with `ANSWER` (~3 s of tone, shorter than the local bot's usual
answer, as a cloud bot's one or two sentences): a bot whose every answer lasted half a
second (`--answer short`, the fake LLM's own) kept each session in its first seconds of
speech for most of a level, while the echo canceller decides whether the microphone hears
the bot (AEC3 and RNNoise on: processors/echo_path.py), which a real session leaves within
its greeting or first answer.

Per turn, measured on the client:
- voice-to-voice: first bot audio byte − the frame holding the last speech sample sent.
  Added latency at N = voice-to-voice − the same question's median voice-to-voice at N=1. Turns
  that smart-turn judged unfinished wait for its 2 s timeout whatever the load; they are
  counted ("held by smart-turn") and left out of the latency figures.
- input lag: arrival of the server's `user-started-speaking` − the frame holding the first
  speech sample sent (VAD start_secs plus however far the server is behind the microphone).
  Backlog growth = median input lag over the last third of the level's window − over the
  first third: a server that falls behind the 20 ms frames shows a growing lag. Levels
  with few sessions run longer than `--secs` so that every level has ~30 turns (with 10,
  the medians of three-turn thirds moved by 25 ms at N=1 from VAD frame alignment alone).

What "keeps real time" means, the bounds from the run-to-run spread (N=1 run twice) and the
ramp (doubling, then bisection up to 64) are in bench/capacity_verdict.py. CPU per session is
the servers' CPU time (all threads and session processes, and Redis with --nodes:
bench/capacity_servers.py) over the window ÷ wall time ÷ N.
With `--profile`, the largest N is run once more under py-spy and its hot spots printed
(bench/cpu_profile.py).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import time

import numpy as np
from bench.common import (
    OUT_DIR,
    add_common_args,
    fmt,
    loadavg,
    markdown_table,
    report,
    shown_path,
    synthesize,
    tree_cpu_seconds,
    wait_for_quiet_machine,
)
from bench.capacity_clients import drive_clients, drive_clients_process
from bench.capacity_verdict import (
    CPU_LIMIT_OF_CORES,
    MAX_LEVEL,
    Bounds,
    baselines,
    judge,
    next_level,
)
from bench.cpu_profile import hot_spots, profile
from bench.capacity_servers import ServedSystem
from tests.support.fakes import FAKE_ANSWER, FAKE_SECS_PER_CHAR

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "Which planet is closest to the sun?",
]
# What the fake bot answers: `spoken` (default) or the fake LLM's own half-second `short`.
ANSWERS = {
    "spoken": "Paris is the capital of France. It stands on the Seine in the north of the "
              "country, and about two million people live in the city itself.",
    "short": FAKE_ANSWER,
}
# A session asks a question every ~3.1 s plus its answer. The backlog check compares medians
# of thirds of a level's turns, so small levels run long enough to have this many turns.
MIN_TURNS = 30
SECS_PER_TURN_BESIDES_ANSWER = 3.1


def secs_per_turn(args) -> float:
    return SECS_PER_TURN_BESIDES_ANSWER + len(ANSWERS[args.answer]) * FAKE_SECS_PER_CHAR


def level_secs(args, n: int) -> float:
    """Measured seconds for level N: --secs, or longer when N is too small for MIN_TURNS."""
    min_turns = 0 if args.smoke else args.min_turns
    return max(args.secs, min_turns * secs_per_turn(args) / n)


# --- one level ----------------------------------------------------------------------------


async def run_level(system: ServedSystem, n: int, questions, args, seed: int) -> dict:
    start_at = time.monotonic() + 1.0
    measure_from = start_at + args.warmup
    deadline = measure_from + level_secs(args, n)
    procs = max(1, min(args.client_procs, n))
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]

    async def server_cpu():
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        c0, t0 = tree_cpu_seconds(system.pids()), time.monotonic()
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        c1 = tree_cpu_seconds(list(c0))
        used = sum(c1[p] - c0[p] for p in c1)
        return used / (time.monotonic() - t0), system.rss_mb()

    cpu_task = asyncio.create_task(server_cpu())
    if procs == 1:
        parts = [await drive_clients(system.connect_url, n, questions, start_at, measure_from,
                                     deadline, seed, args.echo_db)]
    else:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool, drive_clients_process, system.connect_url, k, questions, start_at,
                        measure_from, deadline, seed + i, args.echo_db,
                    )
                    for i, k in enumerate(shares)
                )
            )
    server_cpu_frac, server_rss = await cpu_task
    turns = [t for p in parts for t in p["turns"]]
    turns.sort(key=lambda t: t["at"])
    await system.wait_idle(60)
    return {
        "n": n,
        "turns": turns,
        "lateness_ms": [x * 1000 for p in parts for x in p["lateness"]],
        "refused": sum(p["refused"] for p in parts),
        "closed": sum(p["closed"] for p in parts),
        "client_cpu": [p["client_cpu"] for p in parts],
        "server_cpu": server_cpu_frac,
        "server_rss": server_rss,
        "procs": procs,
    }


# --- main ---------------------------------------------------------------------------------


async def run(args) -> tuple[str, dict]:
    print("synthesizing the questions with the local voice…", flush=True)
    questions = [q.audio for q in synthesize(QUESTIONS)]
    env = {"MAX_SESSIONS": "1000"}
    if args.session_processes:
        env |= {"SESSION_PROCESSES": "true", "SESSION_PROCESS_SPARES": str(args.spares)}
    results, verdicts, labels = [], [], []
    passed, bounds = [], Bounds()
    started_load = loadavg()
    profile_text = ""

    def show(label: str, level: dict, verdict: dict) -> None:
        results.append(level)
        verdicts.append(verdict)
        labels.append(label)
        print(
            f"N={label}: {verdict['turns']} turns, v2v p50 {fmt(verdict['v2v_p50'])} "
            f"p95 {fmt(verdict['v2v_p95'])} ms, "
            f"added p95 {fmt(verdict['added_p95'])} ms, input lag p50 {fmt(verdict['lag_p50'])} "
            f"growth {fmt(verdict['growth'])} ms, underruns {verdict['underruns']}, server CPU "
            f"{verdict['server_cpu']:.0f}% ({verdict['cpu_per_session']:.1f}%/session), client CPU "
            f"{[round(c) for c in verdict['client_cpu']]}%, mic lateness p95 "
            f"{fmt(verdict['lateness_p95'], 1)} ms, "
            f"held {verdict['held']}, server stages p95 "
            + ", ".join(f"{k} {fmt(v)}" for k, v in verdict["stages_p95"].items())
            + f" → {'OK' if verdict['ok'] else 'FAIL: ' + '; '.join(verdict['reasons'])}"
            f"{' (client-bound)' if verdict['client_bound'] else ''}",
            flush=True,
        )

    async with ServedSystem(args.nodes, env, answer=ANSWERS[args.answer]) as system:
        # One conversation per node first: a server loads its VAD and smart-turn models lazily.
        warm_up = argparse.Namespace(warmup=0.0, secs=3.0, client_procs=1, smoke=True,
                                     echo_db=args.echo_db, answer=args.answer)
        await run_level(system, args.nodes, questions, warm_up, seed=1)
        # N=1 twice: the first gives each question's baseline, the repeat the spread.
        first = await run_level(system, 1, questions, args, seed=1000)
        repeat = await run_level(system, 1, questions, args, seed=1001)
        baseline = baselines(first)
        bounds = Bounds.from_spread(first, repeat, baseline)
        print(f"spread at N=1: added p95 {fmt(bounds.spread_added_p95_ms)} ms, backlog growth "
              f"{fmt(bounds.spread_growth_ms)} ms → bounds {bounds.added_p95_ms:.0f} / "
              f"{bounds.growth_ms:.0f} ms",
              flush=True)
        show("1", first, judge(first, baseline, bounds))
        show("1 (repeat)", repeat, judge(repeat, baseline, bounds))
        passed = [1] if verdicts[0]["ok"] and verdicts[1]["ok"] else []
        failed = [] if passed else [1]
        planned = [n for n in args.levels if n > 1] if args.levels else None
        while True:
            if planned is not None:  # the levels asked for, until one past N=1 fails
                n = planned.pop(0) if planned and not any(f > 1 for f in failed) else None
            else:
                n = next_level(passed, failed) if passed else None
            if n is None:
                break
            level = await run_level(system, n, questions, args, seed=1000 + n)
            show(str(n), level, judge(level, baseline, bounds))
            (passed if verdicts[-1]["ok"] else failed).append(n)
        if args.profile:
            n = results[-1]["n"]
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            raw = OUT_DIR / f"capacity-N{n}.pyspy.txt"
            print(f"profiling the server with py-spy at N={n}…", flush=True)
            task = asyncio.create_task(run_level(system, n, questions, args, seed=999))
            await asyncio.sleep(1.0 + args.warmup)
            ok = await asyncio.to_thread(profile, system.servers[0].pid, args.secs - 1, raw)
            await task
            if ok:
                by_component, by_function = hot_spots(raw)
                profile_text = (
                    f"Server hot spots at N={n} (py-spy, 100 Hz, {args.secs - 1:.0f} s; "
                    f"raw stacks: {shown_path(raw)}):\n\n{by_component}\n\n{by_function}"
                )
                print("\n" + profile_text)

    largest = max(passed, default=0)
    rows = []
    for label, r, v in sorted(zip(labels, results, verdicts),
                              key=lambda row: (row[1]["n"], row[0])):
        rows.append([
            label, v["turns"], fmt(v["v2v_p50"]), fmt(v["v2v_p95"]), fmt(v["added_p95"]),
            fmt(v["lag_p50"]), fmt(v["growth"]), f"{v['underruns']} ({v['underrun_ms']:.0f} ms)",
            f"{v['server_cpu']:.0f}", f"{v['cpu_per_session']:.1f}", f"{r['server_rss']:.0f}",
            "/".join(f"{c:.0f}" for c in v["client_cpu"]), fmt(v["lateness_p95"], 1), v["held"],
            v["failed"] + r["refused"] + r["closed"],
            ("yes" if v["ok"] else "no: " + "; ".join(v["reasons"]))
            + (" (client-bound)" if v["client_bound"] else ""),
        ])
    table = markdown_table(
        ["N", "turns", "v2v p50 ms", "v2v p95 ms", "added p95 ms", "input lag p50 ms",
         "backlog growth ms", "underruns (silence)", "server CPU %", "CPU %/session",
         "server RSS MB", "client CPU %", "mic lateness p95 ms", "held by smart-turn", "failed",
         "real time"],
        rows,
    )
    # Memory per added session: the slope of the servers' RSS (with sessions live) over N.
    ns = np.array([r["n"] for r in results], dtype=float)
    rss_slope = (float(np.polyfit(ns, [r["server_rss"] for r in results], 1)[0])
                 if len(set(ns)) > 1 else None)
    figures = {"largest": largest, "rss_per_session": rss_slope, "load": started_load,
               "profile": profile_text, "baseline": baseline, "bounds": bounds,
               "cpu_per_session": verdicts[-1]["cpu_per_session"] if verdicts else None}
    return table, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="Run these levels (after N=1 and its repeat) until one fails, "
                             f"instead of the ramp: doubling, then bisection, up to {MAX_LEVEL}.")
    parser.add_argument("--session-processes", action="store_true",
                        help="SESSION_PROCESSES=true: each session in its own session process.")
    parser.add_argument("--nodes", type=int, default=1,
                        help="Server processes sharing a private Redis (cluster mode), sessions "
                             "placed by POST /api/connect: one per core uses the machine's cores.")
    parser.add_argument("--spares", type=int, default=4,
                        help="SESSION_PROCESS_SPARES with --session-processes.")
    parser.add_argument("--secs", type=float, default=40.0, help="Measured seconds per level.")
    parser.add_argument("--min-turns", type=int, default=MIN_TURNS,
                        help="Run small levels longer than --secs to measure about this many "
                             "turns.")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="Unmeasured seconds at the start of a level.")
    parser.add_argument("--client-procs", type=int, default=1,
                        help="Client processes to drive the sessions.")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--answer", choices=sorted(ANSWERS), default="spoken",
                        help="The fake bot's answer: ~3 s of speech (spoken) or half a second "
                             "(short).")
    parser.add_argument("--echo-db", type=float, default=None,
                        help="Each client plays the bot's audio back into its microphone at this "
                             "gain (e.g. -20: a laptop without headphones); default: none "
                             "(headphones, or a browser that cancelled the echo).")
    args = parser.parse_args()
    if args.smoke:
        args.levels, args.secs, args.warmup, args.profile = [1, 2], 10.0, 0.0, False
        args.answer = "short"  # a few turns in 10 s, however loaded the machine
    wait_for_quiet_machine(args.wait_load, timeout_secs=3 * 3600)
    started = time.monotonic()
    table, figures = asyncio.run(run(args))
    lines = [
        f"- target >= 50 concurrent sessions with fake providers: largest N in real time = "
        f"{figures['largest']} — "
        f"{'reached' if figures['largest'] >= 50 else 'NOT reached'}",
        "- N=1 voice-to-voice median per question (the baselines of 'added'): "
        + ", ".join(f"{fmt(ms)} ms" for _, ms in sorted((figures["baseline"] or {}).items())),
        f"- real time = p95 added latency < {figures['bounds'].added_p95_ms:.0f} ms and "
        f"backlog growth < {figures['bounds'].growth_ms:.0f} ms (twice the spread of a "
        f"repeated N=1: {fmt(figures['bounds'].spread_added_p95_ms)} / "
        f"{fmt(figures['bounds'].spread_growth_ms)} ms, floors 50 / 20 ms), "
        f"no underrun of the bot's audio in a browser-like player (80 ms pre-buffer), "
        "server CPU < "
        f"{CPU_LIMIT_OF_CORES:.0%} of the cores, no failed/refused/closed session",
        f"- memory per added session: {fmt(figures['rss_per_session'], 1)} MB (the slope of the "
        "servers' RSS over the levels' N, sessions live)",
        "- 'held by smart-turn': turns smart-turn judged unfinished, answered at its 2 s timeout "
        "(a verdict on the audio, the same at any N); left out of the latency figures and counted "
        "here",
    ]
    if args.nodes > 1:
        mode = f"{args.nodes} server processes sharing Redis, sessions placed by /api/connect"
        name, title = ("capacity_nodes",
                       f"Capacity, {args.nodes} server processes on this machine (fake providers)")
    elif args.session_processes:
        mode = "each session in its own process"
        name, title = ("capacity_processes",
                       "Capacity, each session in its own process (fake providers)")
    else:
        mode = "all sessions in the server process"
        name, title = "capacity", "Capacity (fake providers)"
    mode += f", the fake bot's {args.answer} answer"
    if args.echo_db is not None:
        mode += f", the bot's echo in every microphone at {args.echo_db:g} dB"
        name, title = f"{name}_echo", f"{title}, the bot's echo in the microphones"
    report(args, name, title, table=table, started_load=figures["load"], verdicts=lines,
           appendix=figures["profile"],
           heading=f"capacity (fake STT/LLM/TTS, {mode}); load average at start {figures['load']}; "
                   f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
