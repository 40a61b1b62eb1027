"""The spoken-QA yardstick's outcomes (one item asked once, in one voice and condition) and
its report: right answers, refusals, knowledge-base leaks, WER and latency per voice and
condition, and the verdicts against the targets (bench/spoken_qa.py asks; this sums up)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from bench.common import fmt, markdown_table, p50, p95
from bench.qa_judge import Item, judge


@dataclass
class Outcome:
    """One item, asked once, in one voice and condition."""

    item: Item
    voice: str
    condition: str
    heard: list[str] = field(default_factory=list)  # the transcript of each utterance
    # Whisper's confidence in each (stt mode)
    heard_logprob: list[float] = field(default_factory=list)
    answer: str = ""
    v2v_ms: float | None = None
    first_token_ms: float | None = None
    problem: str = ""
    # LLM_TURN_COMPLETION: the LLM judged the (whole) question unfinished and said nothing.
    held_back: bool | None = None

    @property
    def verdict(self):
        return judge(self.item, self.answer)


def wer(outcomes) -> float:
    from tests.text import normalise

    import jiwer

    refs, hyps = [], []
    for o in outcomes:
        for text, heard in zip(o.item.utterances, o.heard):
            refs.append(normalise(text))
            hyps.append(normalise(heard) or "")
    return jiwer.wer(refs, hyps) if refs else float("nan")


def summarize(outcomes: list[Outcome], mode: str) -> tuple[str, dict]:
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[(o.voice, o.condition)].append(o)
    rows, figures = [], {}
    for (voice, condition), group in groups.items():
        verdicts = [o.verdict for o in group]
        right = sum(v.right for v in verdicts)
        latency = [o.v2v_ms if mode == "voice" else o.first_token_ms for o in group]
        f = figures[(voice, condition)] = {
            "n": len(group), "right": right, "share": right / len(group),
            "refusals": sum(v.refusal for v in verdicts), "leaks": sum(v.leak for v in verdicts),
            "asked_again": sum(v.asked_again for v in verdicts),
            "wer": wer(group) if mode != "text" else None,
            "p50": p50(latency), "p95": p95(latency),
            "problems": sum(1 for o in group if o.problem),
        }
        word_error = "–" if f["wer"] is None else f"{100 * f['wer']:.1f} %"
        rows.append([voice, condition, f"{right}/{len(group)} ({100 * f['share']:.0f} %)",
                     f["asked_again"], f["refusals"], f["leaks"], word_error,
                     fmt(f["p50"]), fmt(f["p95"]), f["problems"]])
    if mode == "stt":  # nothing was asked: only what the recogniser heard
        table = markdown_table(["voice", "condition", "WER"], [[r[0], r[1], r[6]] for r in rows])
        return table, figures
    latency_name = "v2v" if mode == "voice" else "first token"
    table = markdown_table(["voice", "condition", "right", "asked again", "refusals", "kb leaks",
                            "WER", f"{latency_name} p50 (ms)", f"{latency_name} p95 (ms)",
                            "no answer"],
                           rows)
    by_category: dict[str, list[bool]] = defaultdict(list)
    for o in outcomes:
        by_category[o.item.category].append(o.verdict.right)
    table += "\n\n" + markdown_table(
        ["category", "right"],
        [[c, f"{sum(v)}/{len(v)} ({100 * sum(v) / len(v):.0f} %)"]
         for c, v in sorted(by_category.items())],
    )
    return table, figures


def verdicts(outcomes: list[Outcome], figures: dict, mode: str) -> list[str]:
    lines = []

    def share(condition: str) -> tuple[int, int]:
        group = [o for o in outcomes if o.condition == condition]
        return sum(o.verdict.right for o in group), len(group)

    targets = (("clean", 0.9), ("noisy", 0.8), ("text", 0.9)) if mode != "stt" else ()
    for condition, target in targets:
        right, n = share(condition)
        if n:
            reached = "reached" if right / n >= target else "NOT reached"
            lines.append(f"- right answers, {condition}: {right}/{n} = {100 * right / n:.1f} % "
                         f"(target ≥ {100 * target:.0f} %) — {reached}")
    if mode != "stt":
        leaks = sum(o.verdict.leak for o in outcomes)
        refusals = sum(o.verdict.refusal for o in outcomes)
        lines.append(f"- knowledge-base leaks: {leaks} (target 0); refusals: {refusals} (target 0)")
        asked = sum(o.verdict.asked_again for o in outcomes)
        given = sum(not o.verdict.right and not o.verdict.asked_again for o in outcomes)
        lines.append(f"- asked again (\"didn't catch that\"): {asked}; wrong answers given: "
                     f"{given} of {len(outcomes)}")
        judged = [o.held_back for o in outcomes if o.held_back is not None]
        if judged:
            lines.append(f"- judged unfinished by the LLM (LLM_TURN_COMPLETION), no answer: "
                         f"{sum(judged)} of {len(judged)}")
    if mode != "text":
        clean = [o for o in outcomes if o.condition == "clean"]
        if clean:
            w = wer(clean)
            reached = "reached" if w <= 0.10 else "NOT reached"
            lines.append(f"- WER clean: {100 * w:.1f} % (target ≤ 10 %) — {reached}")
    if mode == "voice":
        lat = [o.v2v_ms for o in outcomes]
        a, b = p50(lat), p95(lat)
        if a is not None:
            reached = "reached" if a <= 800 and b <= 1500 else "NOT reached"
            lines.append(f"- voice-to-voice p50 {fmt(a)} ms (target ≤ 800), "
                         f"p95 {fmt(b)} ms (target ≤ 1,500) — {reached}")
    wrong = ([o for o in outcomes if not o.verdict.right and not o.verdict.asked_again]
             if mode != "stt" else [])
    if wrong:
        lines.append("- wrong answers (first 12): " + "; ".join(
            f"{o.item.id} [{o.voice}/{o.condition}] "
            f"heard {o.heard[-1] if o.heard else o.item.q!r} → {o.answer[:80]!r}"
            for o in wrong[:12]))
    return lines
