"""Bounded memory: the context keeps to CONTEXT_TOKEN_BUDGET and the process stays flat.

Turns are driven as text frames (no audio) through run_bot's own pipeline (`build_pipeline`):
the budget and, with CONTEXT_SUMMARIZE, Pipecat's summarizer, the budget guards around the LLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os

import pytest
from pipecat.frames.frames import LLMMessagesAppendFrame, LLMUpdateSettingsFrame
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.settings import LLMSettings
from pipecat.workers.runner import WorkerRunner

from bot.config import Settings
from tests.support.fakes import InstantLLMService, InstantSTTService, InstantTTSService
from bot.local.models import LocalModels
from bot.pipeline import build_pipeline
from bot.providers import Services, create_llm
from processors.context_budget import ContextBudget, messages_tokens
from tests.peers.groq import GroqPeer, TextReply
from tests.support.pipeline import NoTransport
from tests.support.polling import until
from tests.support.settings import local_settings

PROMPT = "You are a terse assistant. Never forget this sentence: the owl flies at midnight."
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def instant_services(llm) -> Services:
    """`llm` with the instant fake STT and a TTS that speaks a sample per sentence."""
    return Services(stt=InstantSTTService(), llm=llm, tts=InstantTTSService(secs_per_char=0))


class Conversation:
    """Turns through run_bot's own pipeline (`build_pipeline`), as text frames."""

    def __init__(self, settings: Settings, services: Services, models: LocalModels):
        self.llm = services.llm
        built = build_pipeline(settings, services, NoTransport(), models)
        self.context, self.budget = built.context, built.budget
        self.answers = 0

        @built.assistant_aggregator.event_handler("on_assistant_turn_stopped")
        async def counted(aggregator, message):
            self.answers += 1

        self.worker = PipelineWorker(
            built.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=settings.input_sample_rate,
                audio_out_sample_rate=settings.output_sample_rate,
            ),
        )

    @contextlib.asynccontextmanager
    async def running(self):
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        run = asyncio.create_task(runner.run())
        # The system instruction is set the way the admin API sets it.
        await self.worker.queue_frame(
            LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction=PROMPT))
        )
        try:
            yield self
        finally:
            await self.worker.cancel()
            await asyncio.wait_for(run, 15)

    async def turn(self, text: str) -> None:
        before = self.answers
        await self.worker.queue_frame(
            LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True)
        )
        await until(lambda: self.answers > before, 10, f"answer to turn {before + 1}")


@pytest.fixture
def analyzers():
    """Local models for the VAD and turn analyzers only (loaded on first use, small)."""
    models = LocalModels(local_settings())
    yield models
    models.close()


async def test_500_turns_stay_within_the_budget_and_memory_stays_flat(analyzers):
    # A cloud LLM's pipeline (offered the web_search tool); the instant fake answers.
    settings = local_settings(
        llm_provider="cloud", groq_api_key="gsk-unused", context_token_budget=16384
    )
    # The instant fake LLM, with long answers so an unbounded context would show in RSS:
    # each turn adds ~32 KB (16 KB asked, 16 KB answered), ~13 MB over 400 turns. One
    # sentence, so the fake voice speaks it at once.
    answer = "The answer goes on and on, " * 600 + "and ends."
    services = instant_services(InstantLLMService(answer=answer))
    conversation = Conversation(settings, services, analyzers)
    question = "Please tell me everything you know about the sea. " * 320
    budget = settings.context_token_budget
    peak = 0

    async with conversation.running() as c:
        for i in range(500):
            if i == 100:
                rss_warm = rss_bytes()
            await c.turn(f"Turn {i}. {question}")
            peak = max(peak, c.budget.request_tokens(c.context))
        rss_end = rss_bytes()

    messages = c.context.messages
    assert c.answers == 500
    # Every LLM request and the context after every turn kept to the budget...
    assert c.budget.stats.requests == 500
    assert c.budget.stats.max_tokens <= budget and peak <= budget, (c.budget.stats, peak)
    assert c.budget.stats.dropped_messages >= 990  # ~2 of 1000 messages left
    # ...by dropping whole old turns: the newest turn is intact, the oldest are gone.
    assert messages[0]["role"] == "user" and messages[-2]["content"].startswith("Turn 499.")
    assert messages[-1] == {"role": "assistant", "content": answer.strip()}
    assert not any(m["content"].startswith("Turn 0.") for m in messages)
    # The system instruction is never dropped (it is the LLM's, and counted in the budget).
    assert c.llm.settings.system_instruction == PROMPT
    assert c.budget.request_tokens(c.context) > messages_tokens(messages) + len(PROMPT) // 4
    # Flat: 400 more turns grew the process by far less than the context would have.
    growth = rss_end - rss_warm
    assert growth < 3 * 1024 * 1024, f"RSS grew {growth / 1e6:.1f} MB over 400 turns"


def test_dropping_keeps_whole_turns_and_tool_calls_with_their_results():
    call = {"id": "call_1", "type": "function",
            "function": {"name": "web_search", "arguments": "{}"}}
    old = [
        {"role": "user", "content": "first question " * 40},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "result " * 80},
        {"role": "assistant", "content": "first answer " * 40},
    ]
    recent = [
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
        {"role": "user", "content": "third question"},
    ]
    context = LLMContext(messages=old + recent)
    budget = ContextBudget(150, lambda: "short prompt")
    tokens = budget.enforce(context)
    assert context.messages == recent and tokens <= 150
    assert budget.stats.dropped_messages == 4 and budget.stats.trims == 1

    # Under budget: untouched.
    assert budget.enforce(context) == tokens and context.messages == recent

    # A current turn that alone exceeds the budget (a huge tool result) is cut, not dropped.
    current = [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x" * 4000},
    ]
    context = LLMContext(messages=recent + current)
    assert budget.enforce(context) <= 150
    kept = context.messages
    assert [m["role"] for m in kept] == ["user", "assistant", "tool"]
    assert kept[2]["content"].startswith("xxx") and kept[2]["content"].endswith("…")
    assert kept[1]["tool_calls"] == [call]


class SummarizingGroq(GroqPeer):
    """Groq peer that answers Pipecat's summarization requests with a fixed summary."""

    SUMMARY = "The user asked about owls, then about bats."

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.summary_requests: list[dict] = []

    async def record(self, request):
        rec = await super().record(request)  # runs before the reply is taken from the queue
        body = rec.body if isinstance(rec.body, dict) else {}
        system = (body.get("messages") or [{}])[0].get("content") or ""
        if not body.get("stream") and system.startswith("You are summarizing a conversation"):
            self.summary_requests.append(body)
            self.replies.appendleft(TextReply(self.SUMMARY))
        return rec


async def test_context_summarize_compresses_old_turns_with_pipecats_summarizer(analyzers):
    async with SummarizingGroq(api_key="gsk-memory", default_reply="An answer. " * 30) as groq:
        settings = Settings(
            _env_file=None, llm_provider="cloud", groq_api_key="gsk-memory",
            groq_base_url=f"{groq.base_url}/openai/v1", search_provider="local",
            context_token_budget=1000, context_summarize=True, system_prompt=PROMPT,
        )
        services = instant_services(create_llm(settings, None))
        conversation = Conversation(settings, services, analyzers)
        async with conversation.running() as c:
            for i in range(3):
                await c.turn(f"Question {i} about owls and bats. " * 20)
            await until(lambda: groq.summary_requests, 20, "summarization request")
            await until(
                lambda: any("Conversation summary:" in str(m.get("content"))
                            for m in c.context.messages),
                20, "summary applied to the context",
            )
            await c.turn("And what did I ask first?")

        # The summary replaced the oldest turns; the next request carries it, and the
        # system instruction is untouched.
        transcript = groq.summary_requests[0]["messages"][-1]["content"]
        assert "Question 0 about owls" in transcript
        last = groq.completions[-1]
        assert last["messages"][0] == {"role": "system", "content": PROMPT}
        assert f"Conversation summary: {SummarizingGroq.SUMMARY}" in [
            m["content"] for m in last["messages"]]
        assert not any("Question 0" in str(m.get("content")) for m in last["messages"])
        assert c.budget.stats.max_tokens <= settings.context_token_budget
