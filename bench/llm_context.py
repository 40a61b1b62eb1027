"""The local LLM's first token over a long conversation, once the context budget drops turns.

    .venv/bin/python -m bench.llm_context             # 40 turns, budget 1024 tokens, both caches
    .venv/bin/python -m bench.llm_context --smoke     # 6 turns, budget 400

One conversation, the same questions for both arms, through the local model in this process
(bot/local/llm_engine.py's Engine: the shipped 0.5B GGUF, the bot's instructions and web_search
tool). Before every request the session's own budget (processors/context_budget.py) drops
the oldest turns that no longer fit, as in a live session. Per turn: time to the first
text piece and the prompt tokens llama.cpp had to read. Arms:

- `prefix cache`: llama-cpp-python as shipped — it reuses the longest common prefix, so once
  turns are dropped the whole history after the instructions is read again each turn;
- `context shift`: bot/local/llm_cache.py — the dropped turns are cut out of the KV cache and the
  kept ones shifted back, so only the new turn is read.
"""

from __future__ import annotations

import argparse
import threading
import time

from bench.common import add_common_args, fmt, loadavg, markdown_table, p50, p95, report
from bench.voice_to_voice import LONG_QUESTIONS, QUESTIONS


def converse(engine, settings, questions: list[str], budget_tokens: int,
             max_tokens: int) -> list[dict]:
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.processors.aggregators.llm_context import LLMContext

    from bot.tools.search import web_search_schema
    from processors.context_budget import ContextBudget

    schema = web_search_schema()
    context = LLMContext(tools=ToolsSchema([schema]))
    budget = ContextBudget(budget_tokens, lambda: settings.system_prompt)
    tools = [{"type": "function", "function": schema.to_default_dict()}]
    engine.llm.reset()
    turns = []
    for question in questions:
        context.add_message({"role": "user", "content": question})
        trims = budget.stats.trims
        budget.enforce(context)
        body = {
            "messages": [{"role": "system", "content": settings.system_prompt}, *context.messages],
            "tools": tools,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": 1,
            "user": "bench",  # one conversation (the cache shifts only within one)
        }
        start, first, text = time.perf_counter(), None, ""
        for piece in engine.stream(body, threading.Event()):
            first = first or time.perf_counter()
            text += piece
        turns.append({
            "ttft_ms": ((first or time.perf_counter()) - start) * 1000,
            "read": engine.llm.prompt_tokens_evaluated,
            "trimmed": budget.stats.trims > trims or bool(turns and turns[-1]["trimmed"]),
        })
        context.add_message({"role": "assistant", "content": text.strip() or "Okay."})
    return turns


def main() -> None:
    from bot.config import Settings
    from bot.local.llm_engine import Engine
    from bot.local.models import LocalModels

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--budget", type=int, default=1024,
                        help="CONTEXT_TOKEN_BUDGET for the run.")
    parser.add_argument("--max-tokens", type=int, default=60, help="Longest answer (tokens).")
    args = parser.parse_args()
    if args.smoke:
        args.turns, args.budget, args.max_tokens = 6, 300, 24
    load = loadavg()
    settings = Settings(_env_file=None)
    models = LocalModels(settings)
    pool = QUESTIONS + LONG_QUESTIONS
    questions = [pool[i % len(pool)] for i in range(args.turns)]
    arms = {}
    for name, shift in (("prefix cache", False), ("context shift", True)):
        engine = Engine(str(models.gguf_path()), settings.llm_threads, settings.llm_context_tokens,
                        settings.llm_model_name, shift=shift)
        arms[name] = converse(engine, settings, questions, args.budget, args.max_tokens)
        del engine
    rows = []
    for phase, pick in (("before the first trim", False), ("after it", True)):
        row = [phase]
        for turns in arms.values():
            chosen = [t for t in turns[1:] if t["trimmed"] == pick]  # turn 1 reads the tool prompt
            row += [len(chosen), fmt(p50([t["ttft_ms"] for t in chosen])),
                    fmt(p95([t["ttft_ms"] for t in chosen])),
                    fmt(p50([t["read"] for t in chosen]))]
        rows.append(row)
    after = [p50([t["ttft_ms"] for t in turns[1:] if t["trimmed"]]) for turns in arms.values()]
    headers = ["turns"]
    for name in arms:
        headers += [f"{name}: n", f"{name}: first token p50 ms", f"{name}: p95 ms",
                    f"{name}: tokens read p50"]
    table = markdown_table(headers, rows)
    verdicts = []
    if all(after):
        verdicts.append(f"- once the budget drops turns, first token p50 {fmt(after[0])} → "
                        f"{fmt(after[1])} ms "
                        f"({after[0] / after[1]:.1f}× faster with the context shift)")
    report(args, "llm_context", "The LLM's first token once the context budget drops turns",
           table=table, started_load=load, verdicts=verdicts,
           heading=f"{args.turns} turns, budget {args.budget} tokens, answers up to "
                   f"{args.max_tokens} tokens, "
                   f"{settings.llm_threads} threads; load at start {load}")


if __name__ == "__main__":
    main()
