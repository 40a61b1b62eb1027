"""Voice-to-voice latency over the real WebSocket endpoint, streaming vs sequential bridge.

    .venv/bin/python -m bench.voice_to_voice            # 24 short + 8 long-answer questions
                                                        # + the shared recordings
    .venv/bin/python -m bench.voice_to_voice --smoke    # 3 questions, checks the bench works

Two real servers (`python -m bot serve`) run side by side: the production pipeline
(STREAMING_BRIDGE=true: the TTS speaks each sentence as the LLM writes it) and the
sequential baseline (STREAMING_BRIDGE=false: the whole reply, then TTS of it;
processors/sequential_bridge.py). A client per server streams each question in real time
(20 ms frames, silence between questions) and the questions alternate between the servers,
so both see the same questions under the same load. One user talks at a time: the client
of the server not being asked mutes its microphone (sends nothing), so that server's audio
path does not compete for the two cores (`--both-mics-live` keeps both streaming).

Per turn, client-side voice-to-voice = arrival of the first bot audio byte − the moment
the 20 ms frame holding the last speech sample of the question was sent (the user stopped
speaking there; the question's own trailing silence and the live silence after it keep
flowing). The server's stage breakdown (its `turn-metrics` message) is kept per turn.
"LLM request → first audio" is the server's voice_to_voice minus vad, stt and turn: the
part of the turn the bridge decides.

Providers come from the environment as for the server (default: the local stack);
e.g. `LLM_PROVIDER=cloud GROQ_API_KEY=… .venv/bin/python -m bench.voice_to_voice`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass, field

from bench.common import (
    Question,
    add_common_args,
    fmt,
    loadavg,
    markdown_table,
    p50,
    p95,
    report,
    shared_recordings,
    synthesize,
    wait_for_quiet_machine,
)
from bench.microphone import (
    Microphone,
    MicrophoneClock,
    audio_between,
    first_audio_after,
    wait_quiet,
)
from bench.server import Server
from web.ws_client import AgentClient

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water?",
    "Which planet is closest to the sun?",
    "What is the largest ocean on Earth?",
    "How many days are there in a week?",
    "What language is spoken in Brazil?",
    "Who painted the Mona Lisa?",
    "What is the chemical symbol for gold?",
    "What is the tallest mountain in the world?",
    "How many continents are there?",
    "What is the capital of Japan?",
    "How many sides does a hexagon have?",
    "What gas do plants take in from the air?",
    "Who was the first person to walk on the moon?",
    "What is the largest planet in our solar system?",
    "What currency is used in the United Kingdom?",
    "How many strings does a violin have?",
    "What is the freezing point of water?",
    "Which animal is the largest on land?",
    "What is the capital of Italy?",
    "How many hours are there in a day?",
    "What color do you get by mixing blue and yellow?",
]
# Questions that draw replies of more than one sentence: where "speak the first sentence
# while the rest is written" and "write it all, then speak" differ.
LONG_QUESTIONS = [
    "Tell me a short story about a brave little fox.",
    "Explain how a rainbow forms.",
    "Give me some tips for sleeping better.",
    "Describe the city of Paris for a visitor.",
    "Why is the sky blue? Explain it simply.",
    "Tell me about the history of the bicycle.",
    "How do airplanes stay in the air?",
    "What should I pack for a week at the beach?",
]
LONG = "long answer"
WARM_UP = "Hello, can you hear me?"
STAGES = ("vad", "stt", "turn", "llm_ttft", "tool", "tts_ttfb")
VARIANTS = {"streaming": {"STREAMING_BRIDGE": "true"}, "sequential": {"STREAMING_BRIDGE": "false"}}


@dataclass
class Turn:
    variant: str
    question: str
    source: str
    client_v2v_ms: float | None = None
    stages: dict = field(default_factory=dict)
    records: int = 0
    bot_words: int = 0
    problem: str = ""  # "no answer", "premature" (the bot spoke before the question ended)

    @property
    def reply_first_audio_ms(self) -> float | None:
        s = self.stages
        if "voice_to_voice" not in s:
            return None
        return s["voice_to_voice"] - sum(s.get(k, 0.0) for k in ("vad", "stt", "turn"))


async def ask(variant: str, client: AgentClient, mic: Microphone, q: Question,
              timeout: float) -> Turn:
    turn = Turn(variant, q.text, q.source)
    turns_before = len(client.received.turns)
    utterance = mic.say(q.audio)
    await utterance.done.wait()
    last = utterance.last_speech_sent_at
    answered = await client.wait_for(lambda r: first_audio_after(r, last) is not None, timeout)
    await wait_quiet(client, 1.0, timeout)  # the whole answer has played
    # Its stage breakdown follows the bot's last audio.
    await client.wait_for(lambda r: len(r.turns) > turns_before, 2.0)
    records = client.received.turns[turns_before:]
    turn.records = len(records)
    if records:
        turn.stages = records[-1]["stages_ms"]
        turn.bot_words = sum(len(r.get("bot_text", "").split()) for r in records)
    first = utterance.first_speech_sent_at
    first_audio = first_audio_after(client.received, last)
    if audio_between(client.received, first, last):
        turn.problem = "premature"
    elif not answered or first_audio is None:
        turn.problem = "no answer"
    else:
        turn.client_v2v_ms = (first_audio - last) * 1000
    await asyncio.sleep(0.5)  # a pause between questions (the microphone keeps sending silence)
    return turn


def summarize(turns: list[Turn], variants: list[str]) -> tuple[str, dict]:
    by = {v: [t for t in turns if t.variant == v] for v in variants}
    ok = {v: [t for t in by[v] if not t.problem] for v in variants}
    figures: dict[str, dict] = {}
    for v in variants:
        client = [t.client_v2v_ms for t in ok[v]]
        short = [t for t in ok[v] if t.source != LONG]
        long = [t for t in ok[v] if t.source == LONG]
        figures[v] = {
            "short_n": len(short),
            "short_words_p50": p50([t.bot_words for t in short]),
            "short_reply_p50": p50([t.reply_first_audio_ms for t in short]),
            "long_n": len(long),
            "long_words_p50": p50([t.bot_words for t in long]),
            "long_reply_p50": p50([t.reply_first_audio_ms for t in long]),
            "n": len(client),
            "client_p50": p50(client),
            "client_p95": p95(client),
            "recordings_p50": p50([t.client_v2v_ms for t in ok[v] if t.source == "recording"]),
            "server_p50": p50([t.stages.get("voice_to_voice") for t in ok[v]]),
            "reply_p50": p50([t.reply_first_audio_ms for t in ok[v]]),
            "reply_p95": p95([t.reply_first_audio_ms for t in ok[v]]),
            "problems": sum(1 for t in by[v] if t.problem),
            "split": sum(1 for t in by[v] if t.records > 1),
            **{f"{s}_p50": p50([t.stages.get(s) for t in ok[v]]) for s in STAGES},
        }

    def ratio(key: str) -> str:
        if len(variants) < 2:
            return ""
        a, b = figures["streaming"][key], figures["sequential"][key]
        return f"{b / a:.2f}×" if a and b else "–"

    rows = [
        ["turns measured", *[figures[v]["n"] for v in variants], ""],
        ["client voice-to-voice p50 (ms)", *[fmt(figures[v]["client_p50"]) for v in variants],
         ratio("client_p50")],
        ["client voice-to-voice p95 (ms)", *[fmt(figures[v]["client_p95"]) for v in variants],
         ratio("client_p95")],
        ["  recordings only, p50 (ms)", *[fmt(figures[v]["recordings_p50"]) for v in variants], ""],
        ["server voice_to_voice p50 (ms)", *[fmt(figures[v]["server_p50"]) for v in variants],
         ratio("server_p50")],
        ["LLM request → first audio p50 (ms)", *[fmt(figures[v]["reply_p50"]) for v in variants],
         ratio("reply_p50")],
        ["LLM request → first audio p95 (ms)", *[fmt(figures[v]["reply_p95"]) for v in variants],
         ratio("reply_p95")],
        ["  short questions (n, words in the reply p50)",
         *[f"{figures[v]['short_n']}, {fmt(figures[v]['short_words_p50'])} words"
           for v in variants], ""],
        ["  short questions, LLM request → first audio p50 (ms)",
         *[fmt(figures[v]["short_reply_p50"]) for v in variants], ratio("short_reply_p50")],
        ["  long-answer questions (n, words in the reply p50)",
         *[f"{figures[v]['long_n']}, {fmt(figures[v]['long_words_p50'])} words"
           for v in variants], ""],
        ["  long-answer questions, LLM request → first audio p50 (ms)",
         *[fmt(figures[v]["long_reply_p50"]) for v in variants], ratio("long_reply_p50")],
    ]
    rows += [[f"  {s} p50 (ms)", *[fmt(figures[v][f"{s}_p50"]) for v in variants], ""]
             for s in STAGES]
    rows += [
        ["turns without a usable answer", *[figures[v]["problems"] for v in variants], ""],
        ["questions split into 2+ turns", *[figures[v]["split"] for v in variants], ""],
    ]
    header = ["metric", *variants, "sequential / streaming" if len(variants) > 1 else ""]
    if len(variants) < 2:
        header, rows = header[:-1], [r[:-1] for r in rows]
    return markdown_table(header, rows), figures


def verdicts(figures: dict, local: bool) -> list[str]:
    lines = []
    s = figures.get("streaming")
    if s and s["client_p50"] is not None:
        reached = s["client_p50"] <= 800
        scope = ("" if local
                 else " (providers not the local stack: the target is for the local stack)")
        lines.append(
            f"- target local voice-to-voice p50 <= 800 ms: {fmt(s['client_p50'])} ms client-side — "
            f"{'reached' if reached else 'NOT reached'}{scope}"
        )
    q = figures.get("sequential")
    if s and q and s["reply_p50"] and q["reply_p50"]:
        r1 = q["reply_p50"] / s["reply_p50"]
        r2 = q["client_p50"] / s["client_p50"] if s["client_p50"] and q["client_p50"] else None
        lines.append(
            f"- target streaming bridge >= 2× faster first audio: {r1:.2f}× from the LLM request, "
            f"{fmt(r2, 2)}× end to end (client voice-to-voice) — "
            f"{'reached' if r1 >= 2 else 'NOT reached'} "
            "(judged on the LLM request → first audio part, which is all the bridge changes)"
        )
    if s and q and s["long_reply_p50"] and q["long_reply_p50"]:
        r3 = q["long_reply_p50"] / s["long_reply_p50"]
        lines.append(
            f"- the same on the long-answer questions alone (replies of "
            f"{fmt(s['long_words_p50'])} words): "
            f"{r3:.2f}× — {'reached' if r3 >= 2 else 'NOT reached'}"
        )
    return lines


async def run(args) -> tuple[str, dict]:
    variants = ["streaming", "sequential"] if args.variants == "both" else [args.variants]
    texts = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.turns)]
    long_texts = [LONG_QUESTIONS[i % len(LONG_QUESTIONS)] for i in range(args.long_turns)]
    print(f"synthesizing {len(texts) + len(long_texts)} questions with the local voice…",
          flush=True)
    questions = synthesize(texts + long_texts + [WARM_UP])
    warm_up, questions = questions[-1], questions[:-1]
    for i in range(len(texts), len(questions)):
        questions[i] = dataclasses.replace(questions[i], source=LONG)
    if args.recordings:
        questions += shared_recordings()
    servers = {v: Server(f"v2v-{v}", VARIANTS[v]) for v in variants}
    for server in servers.values():
        server.start()
    clock = MicrophoneClock().start()
    clients: dict[str, AgentClient] = {}
    try:
        print("starting the servers (models load and warm up)…", flush=True)
        await asyncio.gather(*(s.wait_ready() for s in servers.values()))
        mics = {}
        for v, server in servers.items():
            clients[v] = AgentClient(server.ws_url)
            await clients[v].connect()
            assert await clients[v].wait_for(
                lambda r: r.server_messages("session"), 30
            ), "no session"
            mics[v] = clock.add(Microphone(clients[v]))
        for v in variants:  # the first turn of a process warms caches: not counted
            await ask(v, clients[v], mics[v], warm_up, args.timeout)
        started_load = loadavg()
        turns: list[Turn] = []
        for i, q in enumerate(questions):
            order = variants if i % 2 == 0 else variants[::-1]
            for v in order:
                for other, mic in mics.items():  # one user at a time: the other server idles
                    mic.muted = other != v and not args.both_mics_live
                t = await ask(v, clients[v], mics[v], q, args.timeout)
                turns.append(t)
                print(
                    f"[{i + 1}/{len(questions)}] {v:10s} client v2v {fmt(t.client_v2v_ms):>5s} ms  "
                    f"stages {t.stages}  {t.problem}  — {q.text[:40]}",
                    flush=True,
                )
    finally:
        await clock.stop()
        for c in clients.values():
            await c.close()
        for server in servers.values():
            server.stop()
    table, figures = summarize(turns, variants)
    figures["load"] = started_load
    return table, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--turns", type=int, default=24, help="Synthesized questions per variant.")
    parser.add_argument("--long-turns", type=int, default=8,
                        help="Synthesized questions that draw multi-sentence replies, per variant.")
    parser.add_argument("--no-recordings", dest="recordings", action="store_false",
                        help="Leave out the real recordings in ../shared/audio.")
    parser.add_argument("--variants", choices=["both", "streaming", "sequential"], default="both")
    parser.add_argument("--both-mics-live", action="store_true",
                        help="Keep streaming silence to the server not being asked (its audio path "
                        "then competes for the CPU, as in the runs before 2026-11-26 06:30).")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="Longest wait for an answer (s).")
    args = parser.parse_args()
    if args.smoke:
        args.turns, args.long_turns, args.recordings = 2, 1, False
    wait_for_quiet_machine(args.wait_load, timeout_secs=3 * 3600)
    stages = ("STT_PROVIDER", "LLM_PROVIDER", "TTS_PROVIDER")
    local = not os.environ.get("BENCH_FAKE") and not any(
        os.environ.get(k, "auto") not in ("auto", "local") for k in stages
    ) and not any(
        os.environ.get(k) for k in ("DEEPGRAM_API_KEY", "GROQ_API_KEY", "CARTESIA_API_KEY")
    )
    started = time.monotonic()
    table, figures = asyncio.run(run(args))
    lines = verdicts(figures, local)
    report(args, "voice_to_voice", "Voice-to-voice and the streaming bridge", table=table,
           started_load=figures["load"], verdicts=lines,
           heading=f"voice-to-voice, "
                   f"{'local stack' if local else 'providers from the environment'}; "
                   f"load average at start {figures['load']}; {time.monotonic() - started:.0f} s",
           env={k: os.environ[k] for k in (*stages, "BENCH_FAKE") if k in os.environ})


if __name__ == "__main__":
    main()
