"""Bounded conversation memory: every LLM request fits CONTEXT_TOKEN_BUDGET.

`ContextBudget` holds the policy and its statistics; `budget.guard()` makes the frame
processor that enforces it. Two guards sit around the LLM — one before it for the user's
turns (downstream context frames), one after it for the re-runs that follow tool results
(upstream context frames) — so no request escapes the budget.

Tokens are estimated as Pipecat's summarizer estimates them (about 4 characters per token,
plus a per-message overhead); the budget covers the system instruction and the tool
definitions, which are sent with every request, as well as the messages. When a request
would not fit, whole turns are dropped from the oldest end (a turn starts at a user
message, so a tool call is never separated from its result) and the current turn is always
kept. The system instruction lives in the LLM's settings, not in the messages, so it is
never dropped. With CONTEXT_SUMMARIZE, Pipecat's `LLMContextSummarizer` compresses older
turns first (`summarizer_config`), and dropping only catches what summarizing has not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

from loguru import logger
from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext, LLMSpecificMessage
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.context.llm_context_summarization import (
    CHARS_PER_TOKEN,
    LLMAutoContextSummarizationConfig,
    LLMContextSummarizationUtil,
    LLMContextSummaryConfig,
)

# Beyond this share of the budget, the summarizer (if enabled) compresses older turns.
SUMMARIZE_AT = 0.6


def estimate_tokens(text: str | None) -> int:
    return -(-len(text) // CHARS_PER_TOKEN) if text else 0


def tools_tokens(context: LLMContext) -> int:
    """Tokens of the tool definitions sent with every request."""
    tools = context.tools
    standard = getattr(tools, "standard_tools", None)
    if not standard:
        return 0
    return estimate_tokens(json.dumps([t.to_default_dict() for t in standard]))


def messages_tokens(messages: list) -> int:
    # The estimator only reads `.messages`; no need to build a whole LLMContext.
    return LLMContextSummarizationUtil.estimate_context_tokens(SimpleNamespace(messages=messages))


@dataclass
class BudgetStats:
    requests: int = 0  # context frames checked
    trims: int = 0  # requests that needed dropping
    dropped_messages: int = 0
    last_tokens: int = 0  # the last request, after trimming
    max_tokens: int = 0  # the largest request seen, after trimming

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ContextBudget:
    """The token budget of one session's context (see the module docstring)."""

    def __init__(self, budget_tokens: int, system_instruction: Callable[[], str | None]):
        self.budget_tokens = budget_tokens
        self._system_instruction = system_instruction
        self.stats = BudgetStats()

    def request_tokens(self, context: LLMContext) -> int:
        """Estimated tokens of one LLM request built from `context` now."""
        return (
            estimate_tokens(self._system_instruction())
            + tools_tokens(context)
            + messages_tokens(context.messages)
        )

    def enforce(self, context: LLMContext) -> int:
        """Drop the oldest turns until a request fits; returns its estimated tokens."""
        messages = context.messages
        fixed = estimate_tokens(self._system_instruction()) + tools_tokens(context)
        total = fixed + messages_tokens(messages)
        self.stats.requests += 1
        if total > self.budget_tokens:
            kept = self._fit(messages, self.budget_tokens - fixed)
            dropped = len(messages) - len(kept)
            context.set_messages(kept)
            total = fixed + messages_tokens(kept)
            self.stats.trims += 1
            self.stats.dropped_messages += dropped
            logger.debug(
                f"Context budget: dropped {dropped} oldest messages; ~{total} of "
                f"{self.budget_tokens} tokens"
            )
        self.stats.last_tokens = total
        self.stats.max_tokens = max(self.stats.max_tokens, total)
        return total

    @staticmethod
    def _fit(messages: list, available: int) -> list:
        """The longest tail of whole turns within `available` tokens (the last turn always)."""
        starts = [
            i
            for i, m in enumerate(messages)
            if not isinstance(m, LLMSpecificMessage) and m.get("role") == "user"
        ]
        if not starts:
            return messages
        for start in starts:
            tail = messages[start:]
            if messages_tokens(tail) <= available:
                return tail
        tail = messages[starts[-1] :]
        return _shorten(tail, available)

    def summarizer_config(self, fixed_tokens: int) -> LLMAutoContextSummarizationConfig:
        """Pipecat's auto-summarization, triggered well before dropping would start.

        `fixed_tokens`: the system instruction and tools, which the summarizer does not
        count (it measures messages only).
        """
        messages_budget = max(64, self.budget_tokens - fixed_tokens)
        return LLMAutoContextSummarizationConfig(
            max_context_tokens=max(32, int(messages_budget * SUMMARIZE_AT)),
            max_unsummarized_messages=None,
            summary_config=LLMContextSummaryConfig(
                target_context_tokens=max(32, messages_budget // 5),
                min_messages_after_summary=2,
                summarization_timeout=60.0,
            ),
        )

    def guard(self) -> ContextBudgetGuard:
        return ContextBudgetGuard(self)


def _shorten(tail: list, available: int) -> list:
    """The current turn alone is over budget: cut its longest texts (rare: huge results)."""
    tail = [dict(m) if isinstance(m, dict) else m for m in tail]
    while messages_tokens(tail) > available:
        texts = [
            (len(m["content"]), i)
            for i, m in enumerate(tail)
            if isinstance(m, dict) and isinstance(m.get("content"), str) and len(m["content"]) > 40
        ]
        if not texts:
            break
        length, i = max(texts)
        excess = (messages_tokens(tail) - available) * CHARS_PER_TOKEN
        tail[i]["content"] = tail[i]["content"][: max(20, length - excess - 1)] + "…"
    return tail


class ContextBudgetGuard(FrameProcessor):
    """Enforces a `ContextBudget` on every LLM context frame passing through it."""

    def __init__(self, budget: ContextBudget, **kwargs):
        super().__init__(**kwargs)
        self.budget = budget

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.budget.enforce(frame.context)
        await self.push_frame(frame, direction)
