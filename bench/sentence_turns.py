"""Sentences kept whole: false cut-offs at comma pauses, and what waiting costs.

    .venv/bin/python -m bench.sentence_turns  # 12 comma questions + 12 plain, 5 voices, 3 pauses
    .venv/bin/python -m bench.sentence_turns --smoke

Each question is spoken clause by clause with a silence at every comma (0.3, 0.4, 0.5 s;
bench/voices.py `with_pauses`) by voices the bot has never heard and by Piper. At each
comma, the turn-end rule sees what it would see at the VAD's stop (0.2 s into the pause):
smart-turn's verdict on the audio so far (the shared ONNX model, as the pipeline runs it),
and Whisper's draft transcript of it (the eager pass). At the real end it sees the same for
the whole question. Two rules are compared:

- stock: the turn ends at the VAD stop when smart-turn says finished, else after
  SMART_TURN_STOP_SECS (2 s);
- ours (bot/turns/turn_end.py `decide`): ends at the stop when the words are a whole question,
  else after the speaker's pause-length wait (their longest comma pause so far, times 1.3,
  within [0.55, 1.0] s), or smart-turn's timeout when words and sound are both unfinished.

A false cut-off is a question whose turn would end at one of its commas (the pause is
longer than the wait). Added latency is silence after the question's last word before the
turn ends, minus the stock 0.2 s stop.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import voices
from bench.common import add_common_args, fmt, loadavg, markdown_table, p50, report

COMMA_QUESTIONS = [
    "Tell me a long, detailed story about the history of Paris.",
    "If you had to pick one city, which would you visit first?",
    "My name is Alex, and I'm planning a trip to Italy.",
    "When I get home tonight, what should I cook for dinner?",
    "Before we start, can you tell me what you can do?",
    "For a family of four, how big a car do we need?",
    "I was wondering, could you explain how vaccines work?",
    "Apart from the price, what is the difference between the two plans?",
    "So, about my phone bill, why is it higher this month?",
    "In the summer, what is the weather like in Spain?",
    "My daughter asked me, and I did not know, why is the sky blue?",
    "Thinking about dinner, is pasta or rice quicker to cook?",
]
PLAIN_QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water?",
    "Which planet is closest to the sun?",
    "Explain how a rainbow forms.",
    "Give me some tips for sleeping better.",
    "Tell me about the history of the bicycle.",
    "How do airplanes stay in the air?",
    "What should I pack for a week at the beach?",
    "Can you recommend a good book?",
    "What time zone is London in?",
]
VOICES = ["flite-slt", "flite-awb", "espeak-rp-slow", "espeak-us-f", "piper-joe"]
PAUSES = [0.3, 0.4, 0.5]
VAD_STOP = 0.2
SMART_TURN_TIMEOUT = 2.0
PRE_SPEECH = 0.2


class Judge:
    """What the pipeline knows at a VAD stop: smart-turn's verdict and the draft words."""

    def __init__(self):
        from bot.config import Settings
        from bot.local.models import LocalModels
        from bot.local.smart_turn import SharedSmartTurnAnalyzer
        from bot.local.whisper_window import WindowedWhisper

        self.models = LocalModels(Settings(_env_file=None))
        self.smart_turn = SharedSmartTurnAnalyzer(session=self.models.smart_turn_session)
        self.smart_turn.set_sample_rate(16000)
        self.whisper = WindowedWhisper(self.models.whisper, 1, 12.0)

    def at_stop(self, audio: np.ndarray) -> tuple[bool, str]:
        x = audio.astype(np.float32) / 32768.0
        silence = np.zeros(int(VAD_STOP * 16000), np.float32)
        segment = np.concatenate([np.zeros(int(PRE_SPEECH * 16000), np.float32), x, silence])
        result = self.smart_turn._predict_endpoint(segment)
        segments, _ = self.whisper.transcribe(
            np.concatenate([x, silence]), language="en", draft=True
        )
        text = " ".join(s.text.strip() for s in segments)
        return result["prediction"] == 1, text


def clauses(text: str) -> list[str]:
    import re

    return [c.strip() for c in re.split(r"\s*(?:,|—| - )\s*", text) if c.strip()]


def run(args) -> tuple[str, dict, list[str]]:
    from bot.turns.turn_end import pause_wait

    judge = Judge()
    piper = judge.models.synthesize
    comma, plain, pauses, voice_names = COMMA_QUESTIONS, PLAIN_QUESTIONS, PAUSES, VOICES
    if args.smoke:
        comma, plain, pauses, voice_names = comma[:2], plain[:2], [0.4], voice_names[:2]
    rows, figures, examples = [], {}, []
    for rule in ("stock", "ours"):
        figures[rule] = {"cut": 0, "n_comma": 0, "added": [], "timeouts": 0}
    for name in voice_names:
        voice = voices.get(name)
        for pause in pauses:
            seen_pauses: list[float] = []  # the speaker's comma pauses so far in this "session"
            for question in comma + plain:
                parts = clauses(question)
                prefixes = [
                    voices.with_pauses(", ".join(parts[: i + 1]), voice, pause, piper)
                    for i in range(len(parts) - 1)
                ]
                whole = voices.with_pauses(question, voice, pause, piper)
                at_commas = [judge.at_stop(p) for p in prefixes]
                at_end = judge.at_stop(whole)
                for rule in ("stock", "ours"):
                    f = figures[rule]
                    wait = pause_wait(seen_pauses, 1.3, 0.55, 1.0)
                    cut = any(ends_within(rule, v, pause, wait) for v in at_commas)
                    if parts[1:]:
                        f["n_comma"] += 1
                        f["cut"] += cut
                        if cut and rule == "ours" and len(examples) < 8:
                            examples.append(
                                f"{name} {pause:.1f} s: {question!r} cut at "
                                f"{[v[1] for v in at_commas]}"
                            )
                    latency = end_latency(rule, at_end, wait)
                    f["added"].append(latency - VAD_STOP)
                    f["timeouts"] += latency >= SMART_TURN_TIMEOUT
                seen_pauses += [pause] * (len(parts) - 1)
            print(f"  {name}, {pause:.1f} s pauses: done", flush=True)
    for rule, f in figures.items():
        rows.append(
            [
                rule,
                f"{f['cut']}/{f['n_comma']} ({100 * f['cut'] / max(1, f['n_comma']):.0f} %)",
                fmt(p50([a * 1000 for a in f["added"]])),
                fmt(np.mean(f["added"]) * 1000),
                f"{f['timeouts']}/{len(f['added'])}",
            ]
        )
    table = markdown_table(
        [
            "rule",
            "questions cut at a comma",
            "added latency p50 (ms)",
            "added latency mean (ms)",
            "turns ended by smart-turn's 2 s timeout",
        ],
        rows,
    )
    return table, figures, examples


def ends_within(rule: str, verdict: tuple[bool, str], pause: float, wait: float) -> bool:
    """Would the turn end during a comma pause of `pause` seconds?"""
    from bot.turns.turn_end import Verdict, decide

    complete, text = verdict
    if rule == "stock":
        return complete  # ends at the VAD stop, inside every pause here (>= 0.3 s)
    v = decide(complete, text)
    if v is Verdict.END:
        return True
    if v is Verdict.WAIT:
        return wait < pause
    return False


def end_latency(rule: str, verdict: tuple[bool, str], wait: float) -> float:
    """Silence after the last word before the turn ends."""
    from bot.turns.turn_end import Verdict, decide

    complete, text = verdict
    if rule == "stock":
        return VAD_STOP if complete else SMART_TURN_TIMEOUT
    v = decide(complete, text)
    return {Verdict.END: VAD_STOP, Verdict.WAIT: wait, Verdict.SMART_TURN: SMART_TURN_TIMEOUT}[v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    args = parser.parse_args()
    load = loadavg()
    started = time.monotonic()
    table, figures, examples = run(args)
    ours, stock = figures["ours"], figures["stock"]
    cut_rate = ours["cut"] / max(1, ours["n_comma"])
    added = p50(ours["added"]) * 1000
    verdicts = [
        f"- target <= 10 % false cut-offs at comma pauses <= 0.5 s: {100 * cut_rate:.0f} % "
        f"(stock {100 * stock['cut'] / max(1, stock['n_comma']):.0f} %) — "
        f"{'reached' if cut_rate <= 0.10 else 'NOT reached'}",
        f"- target <= +150 ms median added latency: {added:.0f} ms — "
        f"{'reached' if added <= 150 else 'NOT reached'}",
    ]
    appendix = (
        "Questions our rule still cut (voice, pause: the draft words at each comma):\n\n"
        + "\n".join(f"- {e}" for e in examples)
        if examples
        else ""
    )
    report(
        args,
        "sentence_turns",
        "Sentences kept whole at comma pauses",
        table=table,
        started_load=load,
        verdicts=verdicts,
        appendix=appendix,
        heading=f"comma pauses; load average at start {load}; {time.monotonic() - started:.0f} s",
    )


if __name__ == "__main__":
    main()
