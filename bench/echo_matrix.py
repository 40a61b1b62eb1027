"""The echo matrix: does the bot's own voice, heard back, ever cut it off, and is the user
always heard over it?

    .venv/bin/python -m bench.echo_matrix            # 8 sessions x 6 overlaps (~10 min)
    .venv/bin/python -m bench.echo_matrix --smoke    # 1 session, 2 overlaps

One real server (`python -m bot serve`, its defaults but a fixed long answer for every
question, the greeting on) and one client per
condition over the `/ws` endpoint. The client plays every bot audio byte back into its own
microphone (`web.ws_client._Speaker`) through a playout buffer and a room (delay
`--echo-delay`, a reverberant tail), at -20 or -10 dB, with or without a browser-style echo
canceller of its own (WebRTC AEC3 with the played audio as reference, as a browser's
`echoCancellation` does). In each session the user asks questions that draw long answers,
in a voice the bot has never heard (bench/voices.py), and talks over each answer
`--into` seconds in, at levels from -10 to -35 dBFS; every third answer is heard to the end.
One voice per session, as a real session has one user (the denoiser adapts to the voice it
hears: a session that changed voices would test that, not the echo); two sessions per
condition, in different voices, so every level is heard in eight voices-and-conditions.

Counted: a false interruption is the bot interrupted or a user turn started while the user
was silent (outside [first speech sample sent, last sent + 1.5 s]); a dropped turn is an
overlapping question after which no user turn started. Holds are the times the bot paused
for speech it then judged not to be the user's (its echo) outside the user's speech, from
the server's log.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import time

import numpy as np

from bench import voices
from bench.common import (
    add_common_args,
    loadavg,
    markdown_table,
    report,
    wait_for_quiet_machine,
)
from bench.microphone import Microphone, MicrophoneClock, wait_quiet
from bench.server import Server
from tests.text import contains_words
from web.ws_client import AgentClient

QUESTIONS = [
    ("Tell me about the history of the Roman Empire.", ("Roman",)),
    ("Explain how the human heart pumps blood.", ("heart",)),
    ("Describe how bread is made, step by step.", ("bread",)),
    ("Tell me everything about the planet Jupiter.", ("Jupiter",)),
    ("Explain how airplanes are able to fly.", ("airplanes", "planes", "fly")),
    ("Describe the water cycle in detail.", ("water",)),
    ("Tell me about the life of Albert Einstein.", ("Einstein",)),
    ("Explain how a rainbow forms in the sky.", ("rainbow",)),
]
LEVELS_DBFS = [-10, -15, -20, -25, -30, -35]
WINDOW_AFTER_SPEECH = 1.5


def at_level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    x = audio.astype(np.float64)
    active = np.abs(x) > 300
    level = 10 * np.log10(np.mean(x[active] ** 2) / 32768.0**2)
    return np.clip(x * 10 ** ((dbfs - level) / 20), -32768, 32767).astype(np.int16)


def with_lead(audio: np.ndarray, secs: float = 0.3) -> np.ndarray:
    return np.concatenate(
        [np.zeros(int(secs * 16000), np.int16), audio, np.zeros(int(0.3 * 16000), np.int16)]
    )


async def answer_playing(client, since: float, secs: float, timeout: float) -> bool:
    """Wait until `secs` of an answer begun after `since` have arrived (False: it ended
    sooner, or never came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.received
        chunks = [(t, n) for t, n in r.audio_chunks if t > since]
        rate = r.audio_sample_rate or 24000
        if sum(n for _, n in chunks) / 2 / rate >= secs:
            return True
        if chunks and time.monotonic() - chunks[-1][0] > 1.0:
            return False
        await client.wait_for(lambda _: False, 0.05)
    return False


async def session(
    server: Server,
    echo_db: float,
    browser_aec: bool,
    levels: list[float],
    voice: str,
    args,
    first_question: int = 0,
) -> dict:
    client = AgentClient(
        server.ws_url,
        echo_gain_db=echo_db,
        echo_delay_secs=args.echo_delay,
        echo_room=True,
        browser_aec=browser_aec,
    )
    clock = MicrophoneClock().start()
    await client.connect()
    mic = clock.add(Microphone(client))
    utterances, overlaps = [], []
    # Each session starts further down the list, so no level always asks the same question.
    pool = itertools.cycle(QUESTIONS[first_question:] + QUESTIONS[:first_question])
    started = time.monotonic()
    try:
        assert await client.wait_for(lambda r: r.server_messages("session"), 30), "no session"
        await wait_quiet(client, 1.5, 60)  # the greeting, heard whole with its echo

        async def say(text: str, dbfs: float):
            audio = with_lead(at_level(voices.synthesize(text, voice), dbfs))
            u = mic.say(audio)
            utterances.append(u)
            await u.done.wait()
            return u

        text, words = next(pool)
        current = await say(text, -20)
        levels = list(levels)
        while levels:
            playing = await answer_playing(
                client, current.last_speech_sent_at, args.into, args.timeout
            )
            if not playing:  # no answer, or one too short to talk over: ask for another
                print(
                    f"  the answer to {text!r} was over before {args.into:.1f} s; asking again",
                    flush=True,
                )
                text, words = next(pool)
                current = await say(text, -20)
                continue
            level = levels.pop(0)
            text, words = next(pool)
            current = await say(text, level)
            overlaps.append((current, level, text, words))
            print(
                f"  [{echo_db} dB, browser AEC {'on' if browser_aec else 'off'}, {voice}] "
                f"overlap {len(overlaps)} at {level} dBFS: {text!r}",
                flush=True,
            )
            if len(overlaps) % 3 == 0:
                await answer_playing(client, current.last_speech_sent_at, 0.1, args.timeout)
                await wait_quiet(client, 1.5, args.timeout)  # this answer heard to the end
        await answer_playing(client, current.last_speech_sent_at, 0.1, args.timeout)
        await wait_quiet(client, 1.5, args.timeout)
        await client.wait_for(lambda r: False, 2.0)  # the last turn records
    finally:
        await clock.stop()
        await client.close()

    received = client.received
    windows = [
        (u.first_speech_sent_at, u.last_speech_sent_at + WINDOW_AFTER_SPEECH) for u in utterances
    ]

    def outside(t: float) -> bool:
        return not any(a <= t <= b for a, b in windows)

    user_starts = [t for t, _ in received.rtvi("user-started-speaking")]
    turns = received.turns
    dropped, wrong = [], []
    for u, level, text, words in overlaps:
        end = u.last_speech_sent_at + 10.0
        heard = [t for t in user_starts if u.first_speech_sent_at - 0.5 <= t <= end]
        if not heard:
            dropped.append((level, text))
        elif not any(contains_words(t.get("user_text", ""), w) for t in turns for w in words):
            wrong.append((level, text))
    finals = [(t, m["data"]["text"]) for t, m in received.rtvi("user-transcription")
              if m["data"].get("final")]
    false_starts = [t for t in user_starts if outside(t)]
    return {
        "overlaps": len(overlaps),
        "false_interruptions": sum(1 for t in received.interruptions if outside(t)),
        "false_turns": len(false_starts),
        # What each false user turn was heard as (the next final transcript): what to trace.
        "false_heard": [next((text for t, text in finals if t >= start), "")
                        for start in false_starts],
        "dropped": dropped,
        "misheard": wrong,
        "seconds": time.monotonic() - started,
    }


LONG_ANSWER = (
    "That is a good question, and there is a lot to say about it. It began a very long time "
    "ago, when people first started to write things down. Over the centuries many changes "
    "came, some slow and some sudden. Today we know much more than we did, but there are "
    "still open questions. Scientists keep studying it, and every year brings something new."
)


async def run(args) -> tuple[str, dict]:
    # The answers are a fixed long text (a stand-in LLM): what is measured is turn-taking
    # over the bot's real Piper voice, not the LLM; --local-llm asks the local model instead.
    server = Server(
        "echo-matrix",
        {"GREETING": "Hi! I'm listening. Ask me anything.", "LOG_LEVEL": "DEBUG"},
        fake="" if args.local_llm else "llm",
        answer=LONG_ANSWER,
    )
    rows, totals = [], {"overlaps": 0, "false": 0, "dropped": 0, "misheard": 0, "holds": 0,
                        "false_heard": []}
    conditions = [(-20, False), (-20, True), (-10, False), (-10, True)]
    voice_pool = itertools.cycle(voices.UNFAMILIAR)
    runs = [(echo, aec, next(voice_pool)) for echo, aec in conditions for _ in range(2)]
    levels = LEVELS_DBFS
    if args.smoke:
        runs, levels = runs[:1], LEVELS_DBFS[2:4]
    async with server:
        for index, (echo_db, browser_aec, voice) in enumerate(runs):
            log_start = server.log_path.stat().st_size
            figures = await session(
                server, echo_db, browser_aec, levels, voice, args,
                first_question=index % len(QUESTIONS)
            )
            holds, echo_judged = server_log_counts(server, log_start)
            for heard in figures["false_heard"]:
                print(f"  false user turn, heard as {heard!r}", flush=True)
            totals["false_heard"] += figures["false_heard"]
            false = figures["false_interruptions"] + figures["false_turns"]
            totals["overlaps"] += figures["overlaps"]
            totals["false"] += false
            totals["dropped"] += len(figures["dropped"])
            totals["misheard"] += len(figures["misheard"])
            totals["holds"] += echo_judged
            rows.append(
                [
                    f"{echo_db} dB",
                    "on" if browser_aec else "off",
                    voice,
                    figures["overlaps"],
                    figures["false_interruptions"],
                    figures["false_turns"],
                    len(figures["dropped"])
                    and ", ".join(f"{lv} dBFS" for lv, _ in figures["dropped"])
                    or 0,
                    len(figures["misheard"])
                    and ", ".join(f"{lv} dBFS" for lv, _ in figures["misheard"])
                    or 0,
                    holds,
                    echo_judged,
                    f"{figures['seconds']:.0f}",
                ]
            )
    table = markdown_table(
        [
            "echo",
            "browser AEC",
            "user's voice",
            "overlaps",
            "false interruptions",
            "false user turns",
            "dropped user turns (level)",
            "heard, words wrong (level)",
            "holds (bot paused)",
            "of which its own echo, let pass",
            "seconds",
        ],
        rows,
    )
    return table, totals


def server_log_counts(server: Server, start: int) -> tuple[int, int]:
    with server.log_path.open() as f:
        f.seek(start)
        text = f.read()
    return len(re.findall(r"holding the bot's speech", text)), len(
        re.findall(r": echo over the bot", text)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument(
        "--into", type=float, default=1.5, help="Seconds of the answer before talking over it."
    )
    parser.add_argument(
        "--echo-delay", type=float, default=0.15, help="Playout buffer + room delay (s)."
    )
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--local-llm", action="store_true", help="Answer with the local LLM.")
    args = parser.parse_args()
    wait_for_quiet_machine(args.wait_load, timeout_secs=3 * 3600)
    load = loadavg()
    started = time.monotonic()
    table, totals = asyncio.run(run(args))
    verdicts = [
        f"- target 0 false interruptions and 0 dropped user turns over >= 40 overlaps: "
        f"{totals['false']} false, {totals['dropped']} dropped "
        f"over {totals['overlaps']} overlaps — "
        + ("reached" if totals["false"] == totals["dropped"] == 0 and totals["overlaps"] >= 40
           else "NOT reached"),
        f"- questions heard but with their key word wrong (STT, not turn-taking): "
        f"{totals['misheard']}",
        "- false user turns heard as: "
        + (", ".join(repr(text) for text in totals["false_heard"]) or "none"),
    ]
    report(
        args,
        "echo_matrix",
        "Echo matrix",
        table=table,
        started_load=load,
        verdicts=verdicts,
        heading=f"echo matrix; load average at start {load}; {time.monotonic() - started:.0f} s; "
        f"echo delay {args.echo_delay:.2f} s, talk-over {args.into:.1f} s into each answer",
    )


if __name__ == "__main__":
    main()
