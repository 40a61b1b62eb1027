"""The capacity bench's clients (bench/capacity.py): N live microphones in one asyncio process,
each asking questions in real time and measuring every turn's voice-to-voice and input lag."""

from __future__ import annotations

import asyncio
import random
import time

import httpx

from bench.capacity_servers import open_session_url
from bench.capacity_verdict import playout_underruns
from bench.common import cpu_seconds
from bench.microphone import Microphone, MicrophoneClock, first_audio_after, wait_quiet
from web.ws_client import AgentClient

# smart-turn judged the question unfinished and the turn waited for its timeout
# (SMART_TURN_STOP_SECS, 2 s): a verdict on the audio, not a sign of load.
TURN_HELD_MS = 1500.0


async def drive_session(
    url, questions, start_at, measure_from, deadline, rng, clock, out, echo_db
) -> None:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    try:
        async with httpx.AsyncClient() as http:
            ws_url = await open_session_url(url, http)
        if ws_url is None:
            raise ConnectionRefusedError("no node took the session")
        client = AgentClient(ws_url, echo_gain_db=echo_db)
        await client.connect()
    except Exception:
        out["refused"] += 1
        return
    try:
        if not await client.wait_for(lambda r: r.server_messages("session"), 30):
            out["refused"] += 1
            return
        mic = clock.add(Microphone(client, phase=rng.uniform(0.0, 0.02)))
        received = client.received
        while time.monotonic() < deadline and not client.closed:
            records_before = len(received.turns)
            question = rng.randrange(len(questions))
            u = mic.say(questions[question])
            await u.done.wait()
            first, last = u.first_speech_sent_at, u.last_speech_sent_at
            answered = await client.wait_for(lambda r: first_audio_after(r, last) is not None, 30)
            starts = [t for t, _ in received.rtvi("user-started-speaking") if t > first]
            turn = {
                "at": first,
                "question": question,
                "v2v_ms": (first_audio_after(received, last) - last) * 1000 if answered else None,
                "input_lag_ms": (starts[0] - first) * 1000 if starts else None,
            }
            await wait_quiet(client, 0.5, 15)
            answer = [c for c in received.audio_chunks if c[0] > last]
            if answer and received.audio_sample_rate:
                turn["underruns"], turn["underrun_secs"] = playout_underruns(
                    answer, 2 * received.audio_sample_rate
                )
            # The turn's record follows the bot's last audio.
            await client.wait_for(lambda r: len(r.turns) > records_before, 2.0)
            stages = [r["stages_ms"] for r in received.turns[records_before:]]
            turn["held"] = bool(stages) and stages[-1].get("turn", 0.0) >= TURN_HELD_MS
            turn["stages_ms"] = stages[-1] if stages else {}
            if first >= measure_from and first <= deadline:
                out["turns"].append(turn)
            await asyncio.sleep(rng.uniform(0.3, 1.0))
        clock.remove(mic)
        out["lateness"].extend(mic.lateness[50:])  # after the first second
        if client.closed:
            out["closed"] += 1
    finally:
        await client.close()


async def drive_clients(
    url, n, questions, start_at, measure_from, deadline, seed, echo_db=None
) -> dict:
    out = {"turns": [], "lateness": [], "refused": 0, "closed": 0}
    rng = random.Random(seed)
    clock = MicrophoneClock().start()
    cpu0, t0 = None, None

    async def sample_cpu():
        nonlocal cpu0, t0
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        cpu0, t0 = cpu_seconds(), time.monotonic()

    sampler = asyncio.create_task(sample_cpu())
    # Sessions connect over the first second or two, like users arriving.
    await asyncio.gather(
        *(
            drive_session(url, questions, start_at + i * 0.03, measure_from, deadline,
                          random.Random(rng.random()), clock, out, echo_db)
            for i in range(n)
        )
    )
    await sampler
    out["client_cpu"] = (cpu_seconds() - cpu0) / (time.monotonic() - t0) if t0 else None
    out["mic_errors"] = clock.errors
    await clock.stop()
    return out


def drive_clients_process(
    url, n, questions, start_at, measure_from, deadline, seed, echo_db
) -> dict:
    """One spawned client process (`--client-procs`): its share of the sessions, its own loop."""
    return asyncio.run(
        drive_clients(url, n, questions, start_at, measure_from, deadline, seed, echo_db)
    )
