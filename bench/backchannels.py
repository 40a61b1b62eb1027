"""Backchannels and real interruptions over the bot's answer: which stop it, and how fast.

    .venv/bin/python -m bench.backchannels            # 20 backchannels + 20 interruptions
    .venv/bin/python -m bench.backchannels --smoke    # one of each

Each trial is one conversation in the local voice loop (bot/conversation.py, real time):
a question, then, 2 s into the bot's answer, either a backchannel ("mm-hmm", "yeah",
"right", "okay", "uh-huh") or a real interruption ("wait", "stop", a question), spoken by
voices the bot has never heard (flite, espeak-ng: bench/voices.py). The answer is a fixed
long text (a stand-in LLM, as in tests/test_turn_taking.py); Whisper, the VAD, the turn
strategies, the echo canceller and the speech gate are the real ones.

- A backchannel interrupts when the answer's turn ends interrupted or a second turn starts.
  Otherwise the bot went on, in one of three ways: the backchannel was recognised as one
  (a `UserBackchannelFrame`), or the STT found no words in it and the bot said the paused
  sentence again (the speech gate's replay), or neither (it was not heard, or its words
  started no turn).
- An interruption stops the bot when the answer's turn ends interrupted; its stop time is
  the server's `barge_in_stop` (the user's first speech, VAD start minus its start_secs, to
  the last audio frame of the answer leaving the output transport).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from pipecat.frames.frames import InterruptionFrame, UserBackchannelFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed

from bench import voices
from bench.common import add_common_args, fmt, loadavg, markdown_table, p50, p95, report
from processors.speech_gate import SpeechGate

ANSWER = (
    "Plants make their food in the leaves, by photosynthesis. "
    "The chlorophyll in each leaf catches the energy of sunlight and keeps it. "
    "Water from the roots and carbon dioxide from the air become sugar."
)
QUESTION = "Can you explain photosynthesis to me?"
BACKCHANNELS = ["Mm-hmm.", "Yeah.", "Right.", "Okay.", "Uh-huh."]
INTERRUPTIONS = [
    "Wait.",
    "Stop.",
    "Hold on, what is chlorophyll?",
    "What is the capital of Spain?",
    "No, tell me about animals instead.",
]
VOICES = ["flite-slt", "flite-awb", "espeak-us-f", "espeak-rp-slow"]
INTO_ANSWER_SECS = 2.0
TARGET_STOP_MS = 250
ANSWER_WAIT_SECS = 20.0


class WhatTheBotDid(BaseObserver):
    """Backchannels recognised, and sentences said again (an interruption the speech gate
    starts itself, rather than passing one on from upstream)."""

    def __init__(self):
        super().__init__()
        self.backchannels = 0
        self.replays = 0
        self._interruptions: set[int] = set()

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if isinstance(frame, UserBackchannelFrame):
            self.backchannels += 1
        elif isinstance(frame, InterruptionFrame) and frame.id not in self._interruptions:
            self._interruptions.add(frame.id)
            self.replays += isinstance(data.source, SpeechGate)


def outcome(interrupted: bool, did: WhatTheBotDid) -> str:
    if interrupted:
        return "stopped"
    if did.replays:
        return "went on: said the sentence again"
    return "went on: backchannel" if did.backchannels else "went on: neither"


async def trial(models, settings, utterance: str, voice: str) -> dict:
    from bot.conversation import converse
    from bot.session import Session
    from tests.support.fakes import FakeProviders
    from transports.file import FileTransportParams, Utterance

    script = [
        Utterance(audio=voices.synthesize(QUESTION, "flite-rms"), name="question"),
        Utterance(
            audio=voices.synthesize(utterance, voice),
            name=utterance,
            after_bot_audio=INTO_ANSWER_SECS,
        ),
    ]
    did = WhatTheBotDid()
    session = Session(settings=settings, models=models, observers=[did],
                      providers=FakeProviders("llm", answer=ANSWER))
    # The script ends when the bot answers its last utterance, or after answer_timeout_secs:
    # a backchannel gets no answer, and the fixed one lasts ~10 s.
    params = FileTransportParams(tail_secs=1.0, answer_timeout_secs=ANSWER_WAIT_SECS)
    result = await converse(script, session, params)
    turns = result.turn_dicts()
    first = turns[0] if turns else {}
    interrupted = bool(first.get("interrupted")) or len(turns) > 1
    return {
        "utterance": utterance,
        "voice": voice,
        "turns": len(turns),
        "interrupted": interrupted,
        "outcome": outcome(interrupted, did),
        "stop_ms": first.get("stages_ms", {}).get("barge_in_stop"),
        "heard": " | ".join(t["user_text"] for t in turns[1:]),
    }


async def run(args) -> tuple[str, list[str]]:
    from bot.config import Settings
    from bot.local.models import LocalModels

    settings = Settings(
        _env_file=None,
        stt_provider="local",
        llm_provider="local",
        tts_provider="local",
        search_provider="local",
        user_idle_secs=0.0,  # no check-in while a trial waits out a backchannel
    )
    models = LocalModels(settings)
    models.warm_up(llm=False)  # the answers come from the fake LLM (FakeProviders)
    backchannels = [(w, v) for v in VOICES for w in BACKCHANNELS][: args.n]
    interruptions = [(w, v) for v in VOICES for w in INTERRUPTIONS][: args.n]
    results = {"backchannel": [], "interruption": []}
    for kind, trials in (("backchannel", backchannels), ("interruption", interruptions)):
        for i, (utterance, voice) in enumerate(trials, 1):
            r = await trial(models, settings, utterance, voice)
            results[kind].append(r)
            print(f"[{kind} {i}/{len(trials)}] {utterance!r} ({voice}): {r['outcome']} "
                  f"stop={fmt(r['stop_ms'])} ms {r['heard']!r}", flush=True)
    models.close()

    false_stops = [r for r in results["backchannel"] if r["interrupted"]]
    stopped = [r for r in results["interruption"] if r["interrupted"]]
    stops = [r["stop_ms"] for r in stopped if r["stop_ms"] is not None]
    slow = [s for s in stops if s > TARGET_STOP_MS]
    went_on = "reached" if not false_stops else "NOT reached"
    all_stopped = "reached" if len(stopped) == len(interruptions) and not slow else "NOT reached"
    verdicts = [
        (
            f"- backchannels that interrupted the bot: {len(false_stops)}/{len(backchannels)} "
            f"(target 0) — {went_on}"
        ),
        (
            f"- real interruptions that stopped the bot: {len(stopped)}/{len(interruptions)}, "
            f"{len(stopped) - len(slow)} within {TARGET_STOP_MS} ms (target all) — {all_stopped}"
        ),
    ]
    def count(what: str) -> int:
        return sum(r["outcome"] == what for r in results["backchannel"])

    rows = [
        ["backchannels (5 words × voices)", len(backchannels)],
        ["… that interrupted the bot", len(false_stops)],
        ["… recognised as backchannels, the bot going on", count("went on: backchannel")],
        ["… with no words found: the bot said its sentence again", count(
            "went on: said the sentence again")],
        ["… neither: not heard, or words that started no turn", count("went on: neither")],
        ["real interruptions (wait, stop, questions × voices)", len(interruptions)],
        ["… that stopped the bot", len(stopped)],
        ["stop time p50 / p95 / max (ms), server barge_in_stop",
         f"{fmt(p50(stops))} / {fmt(p95(stops))} / {fmt(max(stops) if stops else None)}"],
        [f"… over {TARGET_STOP_MS} ms", len(slow)],
    ]
    detail = markdown_table(
        ["kind", "said", "voice", "bot", "stop (ms)", "later turns heard"],
        [
            [kind, r["utterance"], r["voice"], r["outcome"], fmt(r["stop_ms"]), r["heard"] or "–"]
            for kind in results
            for r in results[kind]
        ],
    )
    # The summary last: a bench's final table is its result.
    return detail + "\n\n" + markdown_table(["metric", "value"], rows), verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("-n", type=int, default=20, help="Trials of each kind (at most 20).")
    args = parser.parse_args()
    if args.smoke:
        args.n = 1
    started_load = loadavg()
    started = time.monotonic()
    table, verdicts = asyncio.run(run(args))
    minutes = (time.monotonic() - started) / 60
    report(
        args,
        "backchannels",
        "Backchannels and real interruptions",
        f"Backchannels and real interruptions ({minutes:.1f} min)",
        table,
        started_load,
        verdicts=verdicts,
    )


if __name__ == "__main__":
    main()
