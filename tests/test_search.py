"""The web_search tool: knowledge base, Tavily, the LLM calling it, filler and apology.

Cloud paths run against loopback peers (tests/peers: Groq's OpenAI-compatible API, Tavily's
REST API). The LLM service and the search backend are built by our factories
(`create_llm`, `create_search`) from `Settings`; the tool is `bot.tools.search.WebSearchTool`,
advertised on the `LLMContext` as `run_bot` does. Every wait is bounded and says what it
waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import pytest
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.workers.runner import WorkerRunner
from pydantic import SecretStr

from bot.config import Settings
from tests.support.fakes import InstantTTSService
from bot.providers import create_llm, create_search
from bot.tools.knowledge import DEFAULT_KNOWLEDGE_DIR, KnowledgeBase
from bot.tools.search import (
    SearchError,
    TavilySearch,
    WebSearchTool,
    format_results,
)
from tests.peers.faults import Fault
from tests.peers.groq import GroqPeer
from tests.peers.tavily import TavilyPeer
from tests.support.polling import until

GROQ_KEY = "gsk-search-test"
TAVILY_KEY = "tvly-search-test"
WAIT = 20.0


def search_settings(groq: GroqPeer, tavily: TavilyPeer | None = None, **overrides) -> Settings:
    values = dict(
        _env_file=None,
        llm_provider="cloud",
        groq_api_key=GROQ_KEY,
        groq_base_url=f"{groq.base_url}/openai/v1",
        search_provider="auto",
        tavily_api_key=TAVILY_KEY if tavily else None,
        **({"tavily_base_url": tavily.base_url} if tavily else {}),
    )
    values.update(overrides)
    return Settings(**values)


def make_tool(settings: Settings) -> WebSearchTool:
    return WebSearchTool(
        create_search(settings),
        timeout_secs=settings.search_timeout_secs,
        max_result_chars=settings.search_max_result_chars,
        filler=settings.search_filler,
        apology=settings.search_apology,
    )


class Pushed(BaseObserver):
    """Every frame the given processors push, in order."""

    def __init__(self, *sources):
        super().__init__()
        self.sources = sources
        self.frames: list[Frame] = []

    async def on_push_frame(self, data: FramePushed):
        if data.source in self.sources and data.frame not in self.frames:
            self.frames.append(data.frame)

    def of(self, kind) -> list:
        return [f for f in self.frames if isinstance(f, kind)]


@contextlib.asynccontextmanager
async def conversation(settings: Settings, tool: WebSearchTool, question: str, models=None):
    """LLM → (fake) TTS → assistant context, with the tool on the context, one question asked."""
    llm = create_llm(settings, models)
    tts = InstantTTSService()
    context = LLMContext(
        messages=[{"role": "user", "content": question}], tools=ToolsSchema([tool.schema])
    )
    _, assistant = LLMContextAggregatorPair(context)
    pushed = Pushed(llm, tts)
    worker = PipelineWorker(
        Pipeline([llm, tts, assistant]), params=PipelineParams(), observers=[pushed]
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    await worker.queue_frame(LLMContextFrame(context))
    try:
        yield pushed, context
    finally:
        await worker.cancel()
        await asyncio.wait_for(run, 15)


def spoken(pushed: Pushed) -> str:
    return " ".join(f.text for f in pushed.of(TTSTextFrame))


def tool_message(body: dict) -> dict:
    return next(m for m in body["messages"] if m["role"] == "tool")


# --------------------------------------------------------------------------------------
# The knowledge base
# --------------------------------------------------------------------------------------


def test_shipped_knowledge_base_is_indexed_once_and_finds_facts():
    settings = Settings(_env_file=None, search_provider="local")
    kb = create_search(settings)
    assert isinstance(kb, KnowledgeBase) and kb.folder == DEFAULT_KNOWLEDGE_DIR.resolve()
    assert kb.files >= 12 and kb.passages >= kb.files
    # Once per process: every session (every create_search) shares the one index.
    assert create_search(settings) is kb

    best = kb.lookup("What is Brightline's loyalty programme called?")[0]
    assert "Lantern Club" in best.content and best.url == "kb://brightline-loyalty.md"
    assert "0800 555 0199" in kb.lookup("Brightline support phone number hours")[0].content
    assert "7860" in kb.lookup("which port does the voice agent web server listen on")[0].content
    assert kb.lookup("the capital of France") == []  # nothing relevant: nothing at all
    # A passage needs half the query's words: one shared word ("times" ~ repair "time") is not
    # enough.
    assert kb.lookup("What is seven times eight?") == []
    # FTS5 syntax in a spoken query is just words, never an error.
    for hostile in ('"; DROP TABLE passages; --', "NEAR(a b)", "*", "AND OR NOT", "", "?!"):
        assert isinstance(kb.lookup(hostile), list)


def test_knowledge_dir_setting_indexes_markdown_and_text_files(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "zebra.md").write_text("# Zebras\n\nThe office zebra is called Dorothy.\n")
    (tmp_path / "sub" / "gate.txt").write_text("The car park gate code is 4417.")
    (tmp_path / "ignored.json").write_text('{"gate": "0000"}')
    kb = create_search(Settings(_env_file=None, search_provider="local", knowledge_dir=tmp_path))
    assert (kb.files, kb.passages) == (2, 2)
    assert kb.lookup("zebra name")[0].title == "Zebras"
    assert "4417" in kb.lookup("gate code")[0].content


def test_results_are_trimmed_before_they_enter_the_context():
    kb = KnowledgeBase.shared(DEFAULT_KNOWLEDGE_DIR)
    results = kb.lookup("Brightline plans prices support roaming bills", limit=5)
    text = format_results("everything", results, 300)
    assert len(text) <= 300 and text.endswith("…")
    assert format_results("x", [], 300).startswith("No results")


# --------------------------------------------------------------------------------------
# The LLM calls web_search: offline (knowledge base) and Tavily
# --------------------------------------------------------------------------------------


async def test_llm_tool_call_searches_the_knowledge_base_and_speaks_the_answer():
    async with GroqPeer(api_key=GROQ_KEY) as groq:
        settings = search_settings(groq)  # no Tavily key: the local knowledge base
        tool = make_tool(settings)
        assert tool.backend.name == "knowledge"
        groq.reply_tool_call("web_search", {"query": "Brightline loyalty programme name"})
        groq.reply_text("It is called the Lantern Club.")

        async with conversation(settings, tool,
                                "What's Brightline's loyalty scheme?") as (pushed, _):
            await groq.wait_for(lambda: len(groq.completions) >= 2, WAIT,
                                "request after the tool call")
            await until(lambda: "Lantern" in spoken(pushed), WAIT, "spoken answer")

        first, second = groq.completions
        assert first["tools"][0]["function"]["name"] == "web_search"
        # The handler ran, and its (trimmed) result reached the next LLM request.
        assert tool.calls == [{"query": "Brightline loyalty programme name", "outcome": "ok",
                               "ms": tool.calls[0]["ms"]}]
        result = tool_message(second)["content"]
        assert "Lantern Club" in result and len(result) <= settings.search_max_result_chars
        # The filler was spoken first, kept out of the context; then the answer, with audio.
        speaks = pushed.of(TTSSpeakFrame)
        assert ([f.text for f in speaks] == [settings.search_filler]
                and not speaks[0].append_to_context)
        assert spoken(pushed).index("look that up") < spoken(pushed).index("Lantern")
        assert pushed.of(TTSAudioRawFrame)
        assert "".join(f.text for f in pushed.of(LLMTextFrame)) == "It is called the Lantern Club."


async def test_llm_tool_call_searches_tavily_per_its_documented_api():
    async with GroqPeer(api_key=GROQ_KEY) as groq, TavilyPeer(api_key=TAVILY_KEY) as tavily:
        settings = search_settings(groq, tavily)
        tool = make_tool(settings)
        assert isinstance(tool.backend, TavilySearch)
        tavily.add_results(
            "Brightline CEO",
            [{"title": "Brightline leadership", "url": "https://example.com/ceo",
              "content": "Marta Quintela has led Brightline since 2019.", "score": 0.9}],
            answer="Marta Quintela is Brightline's CEO.",
        )
        groq.reply_tool_call("web_search", {"query": "Brightline CEO"})
        groq.reply_text("Brightline's CEO is Marta Quintela.")

        async with conversation(settings, tool, "Who runs Brightline?") as (pushed, _):
            await groq.wait_for(lambda: len(groq.completions) >= 2, WAIT,
                                "request after the search")
            await until(lambda: "Quintela" in spoken(pushed), WAIT, "spoken answer")

        (request,) = [r for r in tavily.requests if r.path == "/search"]
        assert (request.method == "POST"
                and request.headers["Authorization"] == f"Bearer {TAVILY_KEY}")
        assert request.body["query"] == "Brightline CEO"
        assert request.body["max_results"] == settings.search_max_results
        assert request.body["search_depth"] == "basic" and request.body["include_answer"] is True
        result = tool_message(groq.completions[1])["content"]
        assert ("Marta Quintela is Brightline's CEO." in result
                and "led Brightline since 2019" in result)
        assert tool.calls[0]["outcome"] == "ok"


@pytest.mark.parametrize("fault", ["slow", Fault.HANG, Fault.HTTP_500])
async def test_a_failing_or_hanging_search_gets_a_spoken_apology_and_ends_the_turn(fault):
    # "slow": an include_answer search that takes longer than SEARCH_TIMEOUT_SECS.
    slow = dict(answer_latency_secs=3.0) if fault == "slow" else {}
    async with GroqPeer(api_key=GROQ_KEY) as groq, TavilyPeer(api_key=TAVILY_KEY, **slow) as tavily:
        settings = search_settings(groq, tavily, search_timeout_secs=1.0)
        tool = make_tool(settings)
        if fault != "slow":
            tavily.faults.inject(fault)
        groq.reply_tool_call("web_search", {"query": "Brightline outage today"})
        groq.reply_text("This must never be said: the turn ends with the apology.")

        async with conversation(settings, tool, "Is Brightline down today?") as (pushed, context):
            await until(lambda: "couldn't look that up" in spoken(pushed), WAIT, "spoken apology")
            await until(lambda: tool_message_in(context), WAIT, "tool result in the context")
            # No second LLM request follows the failure: the apology closed the turn.
            await until(lambda: len(tavily.searches) == 1, WAIT, "search request")

        assert tool.calls[0]["outcome"] == ("error" if fault is Fault.HTTP_500 else "timeout")
        if fault is not Fault.HTTP_500:
            # Our SEARCH_TIMEOUT_SECS (1 s) gave up on it, not Pipecat's backstop (6 s),
            # which would have cancelled the handler without a word.
            assert 1000 <= tool.calls[0]["ms"] < 6000, tool.calls
        assert len(groq.completions) == 1
        assert [f.text for f in pushed.of(TTSSpeakFrame)] == [
            settings.search_filler, settings.search_apology]
        assert "search failed" in tool_message_in(context)["content"]
        # The apology is in the context as the bot's own words.
        assert any(m["role"] == "assistant" and "couldn't look that up" in (m.get("content") or "")
                   for m in context.messages)


TAVILY_FAILURES = {
    "rate_limited": ({"kind": Fault.HTTP_429}, "rate limit"),
    "plan_limit_432": ({"kind": Fault.HTTP_432}, "plan's set usage limit"),
    "pay_as_you_go_limit_433": ({"kind": Fault.HTTP_433}, "pay-as-you-go limit"),
    "server_error": ({"kind": Fault.HTTP_500}, "HTTP 500"),
    "not_json": ({"kind": Fault.MALFORMED}, "not JSON"),
    "wrong_shape": ({"kind": Fault.MALFORMED, "variant": "schema"}, "unexpected payload"),
    "dropped": ({"kind": Fault.DISCONNECT}, "unreachable"),
}


@pytest.mark.parametrize("failure", list(TAVILY_FAILURES))
async def test_tavily_failures_are_clear_search_errors(failure):
    """Our client (tavily-python underneath) turns each documented failure into a
    SearchError that says what happened; the tool then apologises (test above)."""
    spec, says = TAVILY_FAILURES[failure]
    async with TavilyPeer(api_key=TAVILY_KEY, latency_secs=0, answer_latency_secs=0) as tavily:
        tavily.faults.inject(**spec, times=1)
        backend = create_search(search_settings_for(tavily))
        with pytest.raises(SearchError, match=re.escape(says)):
            await backend.search("Brightline outage")
        # The next search, with no fault, works: nothing is left broken.
        assert await backend.search("Brightline outage")


async def test_tavily_rejects_a_bad_key_clearly():
    async with TavilyPeer(api_key=TAVILY_KEY) as tavily:
        settings = search_settings_for(tavily).model_copy(update={"tavily_api_key": SecretStr("x")})
        with pytest.raises(SearchError, match="rejected TAVILY_API_KEY"):
            await create_search(settings).search("anything")
        assert not tavily.searches


async def test_tavily_client_speaks_the_documented_request():
    async with TavilyPeer(api_key=TAVILY_KEY) as tavily:
        tavily.add_results(
            "Brightline CEO",
            [{"title": "Leadership", "url": "https://example.com/ceo", "content": " Marta Q. "}],
            answer="Marta Quintela.",
        )
        results = await create_search(search_settings_for(tavily)).search("Brightline CEO")
    assert [(r.title, r.content, r.url) for r in results] == [
        ("Answer", "Marta Quintela.", ""),
        ("Leadership", "Marta Q.", "https://example.com/ceo"),
    ]
    (request,) = tavily.requests
    assert request.headers["Authorization"] == f"Bearer {TAVILY_KEY}"
    assert request.headers["X-Client-Source"] == "tavily-python"  # through the library


def search_settings_for(tavily: TavilyPeer) -> Settings:
    return Settings(
        _env_file=None, search_provider="cloud", tavily_api_key=TAVILY_KEY,
        tavily_base_url=tavily.base_url,
    )


def tool_message_in(context: LLMContext) -> dict | None:
    return next(
        (m for m in context.messages
         if m.get("role") == "tool" and m.get("content") != "IN_PROGRESS"),
        None,
    )


async def test_a_second_call_in_the_same_turn_reads_the_best_result_instead_of_looping():
    """Small models ask again instead of answering from the results: no loop, no 2nd search."""
    async with GroqPeer(api_key=GROQ_KEY) as groq:
        settings = search_settings(groq)
        tool = make_tool(settings)
        groq.reply_tool_call("web_search", {"query": "Brightline loyalty programme"})
        groq.reply_tool_call("web_search", {"query": "Brightline loyalty programme"})
        groq.reply_text("This must never be said: the repeat call ends the turn.")

        async with conversation(settings, tool,
                                "What's the loyalty programme called?") as (pushed, _):
            await until(lambda: "Lantern Club" in spoken(pushed), WAIT, "best result read out")
            await until(lambda: len(tool.calls) == 2, WAIT, "second call handled")

        assert [c["outcome"] for c in tool.calls] == ["ok", "repeat"]
        assert len(groq.completions) == 2
        said = [f.text for f in pushed.of(TTSSpeakFrame)]
        assert said[0] == settings.search_filler and len(said) == 2  # one filler only
        assert said[1].startswith(
            "Here's what I found: Brightline's loyalty programme is called the Lantern Club.")


def test_the_server_indexes_the_knowledge_base_at_start_up(tmp_path: Path):
    from bot.local.models import LocalModels
    from web.app import create_app

    (tmp_path / "vault.md").write_text("The vault code is 9931.")
    settings = Settings(_env_file=None, search_provider="local", knowledge_dir=tmp_path)
    assert tmp_path.resolve() not in KnowledgeBase._shared
    create_app(settings, LocalModels(settings))  # before any session
    assert KnowledgeBase._shared[tmp_path.resolve()].files == 1


async def test_a_search_that_finds_nothing_is_answered_without_the_tool():
    """Small models call the tool for general questions; an empty search must not cost the
    answer: the LLM is asked again with no tools, and the bot says that answer."""
    async with GroqPeer(api_key=GROQ_KEY) as groq:
        settings = search_settings(groq)
        tool = make_tool(settings)
        groq.reply_tool_call("web_search", {"query": "capital of France"})
        groq.reply_text("Paris is the capital of France.")

        async with conversation(settings, tool, "What is the capital of France?") as (pushed, _):
            await until(lambda: "Paris" in spoken(pushed), WAIT, "answer without the tool")

        assert [c["outcome"] for c in tool.calls] == ["empty"]
        first, second = groq.completions
        assert first["stream"] is True and "tools" in first
        # The second request is a one-shot completion with no tools, ending at the question.
        assert not second.get("stream") and not second.get("tools")
        assert second["messages"][-1] == {"role": "user",
                                          "content": "What is the capital of France?"}
        assert second["messages"][0] == {"role": "system", "content": settings.system_prompt}
        said = [f.text for f in pushed.of(TTSSpeakFrame)]
        assert said == [settings.search_filler, "Paris is the capital of France."]


async def test_text_before_a_tool_call_is_not_followed_by_the_filler():
    """Groq's models may say something before calling the tool ("Let me check that."):
    that is the preamble; the filler on top of it would be said twice over."""
    async with GroqPeer(api_key=GROQ_KEY) as groq:
        settings = search_settings(groq)
        tool = make_tool(settings)
        groq.reply_tool_call(
            "web_search", {"query": "Brightline loyalty programme"}, preamble="Let me check that."
        )
        groq.reply_text("It is called the Lantern Club.")

        async with conversation(settings, tool,
                                "What's Brightline's loyalty scheme?") as (pushed, _):
            await until(lambda: "Lantern" in spoken(pushed), WAIT, "the answer")

        assert [c["outcome"] for c in tool.calls] == ["ok"]
        said = spoken(pushed)
        assert said.count("Let me check that.") == 1, said
        assert settings.search_filler not in said, said
        assert said.index("Let me check") < said.index("Lantern")
