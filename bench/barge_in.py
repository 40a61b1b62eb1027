"""Barge-in: how fast the bot falls silent when talked over, and whether its echo fools it.

    .venv/bin/python -m bench.barge_in             # 20 interruptions, echo at -20 dB
    .venv/bin/python -m bench.barge_in --smoke     # 2 interruptions, checks the bench works

One real server (`python -m bot serve`) and one client over the WebSocket endpoint. The
client asks for a long answer; once `--into` seconds of it have arrived it asks the next
long question over it (a barge-in), and so on. Every `--listen-every`-th answer is heard to
the end instead, so the echo has whole answers to trip on too.

Stop time = arrival of the last audio byte of the interrupted answer − the moment the
20 ms frame holding the first speech sample of the new question was sent. (The server
sends audio at playback speed, so what has not arrived has not been played; the client
drops nothing.) The interrupted answer's audio is the run of audio messages that goes on
from before the barge-in without a gap of more than 0.25 s.

Echo: the client plays every bot audio byte it receives back into its own microphone at
`--echo-db` (default -20 dB, 100 ms later), as a laptop without headphones does, and
flushes it when the server interrupts the bot. A false interruption is a user turn
(`user-started-speaking`) or an interruption that the server started while the client
was not speaking (outside [first speech sample sent, last speech sample sent + 1.5 s]).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

from bench.common import (
    add_common_args,
    fmt,
    loadavg,
    markdown_table,
    p50,
    p95,
    report,
    synthesize,
    wait_for_quiet_machine,
)
from bench.microphone import Microphone, MicrophoneClock, wait_quiet
from bench.server import Server
from web.ws_client import AgentClient

LONG_QUESTIONS = [
    "Please explain in detail how photosynthesis works in plants.",
    "Tell me the history of the Roman Empire, from its beginning to its fall.",
    "Describe in detail how a car engine works.",
    "Explain in detail how the internet sends a message from one computer to another.",
    "Tell me everything you know about the planets of the solar system.",
    "Explain in detail how the human heart pumps blood through the body.",
    "Describe how bread is made, step by step, from the flour to the oven.",
    "Explain in detail how airplanes are able to fly.",
]
GAP_SECS = 0.25  # audio messages of one answer arrive every 40 ms; a longer gap ends it
WINDOW_AFTER_SPEECH = 1.5


def audio_secs_after(received, t: float) -> float:
    rate = received.audio_sample_rate or 24000
    return sum(n for arrived, n in received.audio_chunks if arrived > t) / 2 / rate


def interrupted_answer_end(received, barge_at: float) -> tuple[bool, float | None]:
    """(was the bot speaking at `barge_at`, arrival of the last byte of that answer)."""
    chunks = [arrived for arrived, _ in received.audio_chunks]
    before = [t for t in chunks if t <= barge_at]
    speaking = bool(before) and barge_at - before[-1] <= GAP_SECS
    if not speaking:
        return False, None
    last = before[-1]
    for t in (t for t in chunks if t > barge_at):
        if t - last > GAP_SECS:
            break
        last = t
    return True, last


async def run(args) -> tuple[str, dict]:
    print("synthesizing the questions with the local voice…", flush=True)
    questions = synthesize(LONG_QUESTIONS)
    env = {} if args.echo_cancel is None else {"ECHO_CANCEL_ENABLED": str(args.echo_cancel).lower()}
    server = Server("barge-in", env)
    clock = MicrophoneClock().start()
    print("starting the server (models load and warm up)…", flush=True)
    async with server:
        client = AgentClient(server.ws_url, echo_gain_db=args.echo_db)
        await client.connect()
        try:
            assert await client.wait_for(lambda r: r.server_messages("session"), 30), "no session"
            mic = clock.add(Microphone(client))
            started_load = loadavg()
            stops, skipped, no_answer, utterances = [], 0, 0, []
            pool = itertools.cycle(questions)
            cycle = 0

            async def say(q):
                u = mic.say(q.audio)
                utterances.append(u)
                await u.done.wait()
                return u

            current = await say(next(pool))
            while len(stops) < args.interruptions and cycle < 3 * args.interruptions + 10:
                cycle += 1
                since = current.last_speech_sent_at
                into = args.into

                def answer_playing(r, since=since, into=into):
                    return audio_secs_after(r, since) >= into

                if not await client.wait_for(answer_playing, args.timeout):
                    no_answer += 1
                    print(f"[{cycle}] no answer within {args.timeout:.0f} s; asking again",
                          flush=True)
                    current = await say(next(pool))
                    continue
                if args.listen_every and cycle % args.listen_every == 0:
                    await wait_quiet(client, 1.5, 120)  # the whole answer, its echo in the mic
                    print(f"[{cycle}] listened to a whole answer", flush=True)
                    current = await say(next(pool))
                    continue
                barge = await say(next(pool))
                speaking, last = interrupted_answer_end(client.received, barge.first_speech_sent_at)
                if not speaking:
                    skipped += 1  # the answer had ended before the barge-in: nothing to stop
                    print(f"[{cycle}] the answer was over before the barge-in", flush=True)
                else:
                    stops.append((last - barge.first_speech_sent_at) * 1000)
                    print(f"[{cycle}] barge-in #{len(stops)}: bot silent after {stops[-1]:.0f} ms",
                          flush=True)
                current = barge
            await wait_quiet(client, 1.5, 120)
            await client.wait_for(lambda r: False, 2.0)  # the last turn records
        finally:
            await clock.stop()
            await client.close()

    windows = [
        (u.first_speech_sent_at, u.last_speech_sent_at + WINDOW_AFTER_SPEECH)
        for u in utterances
        if u.first_speech_sent_at is not None and u.last_speech_sent_at is not None
    ]

    def outside(t: float) -> bool:
        return not any(a <= t <= b for a, b in windows)

    received = client.received
    false_turns = [t for t, _ in received.rtvi("user-started-speaking") if outside(t)]
    false_interruptions = [t for t in received.interruptions if outside(t)]
    server_stops = [r["stages_ms"]["barge_in_stop"] for r in received.turns
                    if "barge_in_stop" in r["stages_ms"]]
    after_ms = [r["audio_after_interruption_ms"] for r in received.turns
                if "audio_after_interruption_ms" in r]
    figures = {
        "n": len(stops),
        "p50": p50(stops),
        "p95": p95(stops),
        "server_p50": p50(server_stops),
        "server_p95": p95(server_stops),
        "after_p50": p50(after_ms),
        "false_turns": len(false_turns),
        "false_interruptions": len(false_interruptions),
        "skipped": skipped,
        "no_answer": no_answer,
        "listened": sum(1 for c in range(1, cycle + 1)
                        if args.listen_every and c % args.listen_every == 0),
        "load": started_load,
    }
    echo = "off" if args.echo_db is None else f"{args.echo_db:g} dB"
    rows = [
        ["interruptions measured", figures["n"]],
        ["stop time p50 (ms), client: first speech sample → last bot audio byte",
         fmt(figures["p50"])],
        ["stop time p95 (ms), client", fmt(figures["p95"])],
        ["server barge_in_stop p50 / p95 (ms)",
         f"{fmt(figures['server_p50'])} / {fmt(figures['server_p95'])}"],
        ["bot audio after the interruption reached the output, p50 (ms)",
         fmt(figures["after_p50"])],
        [f"false user turns from echo ({echo})", figures["false_turns"]],
        [f"false interruptions from echo ({echo})", figures["false_interruptions"]],
        ["whole answers heard with the echo", figures["listened"]],
        ["barge-ins after the answer had ended (not counted)", figures["skipped"]],
        ["questions without an answer", figures["no_answer"]],
    ]
    return markdown_table(["metric", "value"], rows), figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--interruptions", type=int, default=20)
    parser.add_argument("--into", type=float, default=1.0,
                        help="Seconds of the answer before barging in.")
    parser.add_argument("--listen-every", type=int, default=5,
                        help="Hear every Nth answer to the end (0: never).")
    parser.add_argument("--echo-db", type=float, default=-20.0,
                        help="Echo of the bot in the mic (dB).")
    parser.add_argument("--no-echo", dest="echo_db", action="store_const", const=None)
    parser.add_argument("--echo-cancel", type=lambda s: s.lower() in ("1", "true", "on", "yes"),
                        default=None,
                        help="Override ECHO_CANCEL_ENABLED on the server (default: its setting).")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.smoke:
        args.interruptions, args.into, args.listen_every = 2, 0.05, 2
    wait_for_quiet_machine(args.wait_load, timeout_secs=3 * 3600)
    started = time.monotonic()
    table, figures = asyncio.run(run(args))
    lines = [
        f"- target barge-in stop p50 <= 250 ms: {fmt(figures['p50'])} ms — "
        f"{'reached' if figures['p50'] is not None and figures['p50'] <= 250 else 'NOT reached'}",
        f"- target zero self-interruptions from echo at -20 dB: "
        f"{figures['false_turns']} false turns, "
        f"{figures['false_interruptions']} false interruptions — "
        + ("reached" if figures["false_turns"] == figures["false_interruptions"] == 0
           else "NOT reached")
        + ("" if args.echo_db == -20 else f" (this run: echo {args.echo_db})"),
    ]
    report(args, "barge_in", "Barge-in and echo", table=table, started_load=figures["load"],
           verdicts=lines,
           heading=f"barge-in; load average at start {figures['load']}; "
                   f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
