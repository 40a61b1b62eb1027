"""The `web_search` tool: Tavily when TAVILY_API_KEY is set, else a local knowledge base.

`bot.providers.create_search` picks the backend; `WebSearchTool` is what the LLM sees — a
Pipecat `FunctionSchema` that carries its handler, advertised on the session's
`LLMContext`. While a search runs the bot says a short filler; a failure or a timeout
(SEARCH_TIMEOUT_SECS) is answered with a spoken apology and ends the turn, so a turn never
hangs on the tool. Results are cut to SEARCH_MAX_RESULT_CHARS before they enter the context.

The knowledge-base backend is `bot.tools.knowledge.KnowledgeBase`. The tool is offered to cloud
LLMs only: a small local model gets knowledge-base passages with the user's turn instead
(processors/knowledge_retrieval.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import httpx
from loguru import logger
from pipecat.adapters.llm.schemas.direct_function import tool_options
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import FunctionCallResultProperties, TTSSpeakFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import FunctionCallParams
from tavily import AsyncTavilyClient
from tavily import errors as tavily_errors

from bot.tools.knowledge import SearchResult

# Longest wait for the tool-free answer to a question the search found nothing for.
ANSWER_TIMEOUT_SECS = 15.0

TOOL_NAME = "web_search"
# With DEFAULT_SYSTEM_PROMPT, the wording measured best with the 0.5B local model, which
# calls a tool it is offered for greetings and arithmetic unless told when not to (README,
# "Web search"). Name your own knowledge base here and in SYSTEM_PROMPT if you replace it.
TOOL_DESCRIPTION = (
    "Search Brightline Telecom's help pages and the web. Only for questions about Brightline "
    "Telecom, this voice agent, news or prices; never for greetings, thanks, chit-chat, "
    "arithmetic or general knowledge."
)


class SearchError(RuntimeError):
    """The search backend failed (HTTP error, bad payload, unreachable)."""


class SearchBackend(Protocol):
    name: str

    async def search(self, query: str) -> list[SearchResult]: ...


# --------------------------------------------------------------------------------------
# Tavily, through its own client (tavily-python's AsyncTavilyClient)
# --------------------------------------------------------------------------------------


class TavilySearch:
    """Tavily search (docs.tavily.com, `POST {base_url}/search`) via `AsyncTavilyClient`.

    `base_url` is TAVILY_BASE_URL (a loopback peer in tests). Every failure is a
    `SearchError` saying what went wrong; the caller bounds the wait (SEARCH_TIMEOUT_SECS).
    """

    name = "tavily"

    def __init__(self, *, api_key: str, base_url: str, max_results: int = 3):
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._max_results = max_results

    async def search(self, query: str) -> list[SearchResult]:
        # One client per search, closed with it: sessions never share a connection pool
        # bound to another event loop, and a cancelled search leaves no socket behind.
        async with AsyncTavilyClient(api_key=self._api_key, api_base_url=self._base_url) as tavily:
            try:
                payload = await tavily.search(
                    query,
                    search_depth="basic",
                    topic="general",
                    max_results=self._max_results,
                    include_answer=True,
                )
            except tavily_errors.UsageLimitExceededError as e:
                raise SearchError(f"Tavily rate limit (HTTP 429): {e}") from e
            except tavily_errors.ForbiddenError as e:
                # 432: the plan's monthly credits are used up; 433: the pay-as-you-go cap.
                raise SearchError(f"Tavily refused the search (plan or usage limit): {e}") from e
            except tavily_errors.InvalidAPIKeyError as e:
                raise SearchError(f"Tavily rejected TAVILY_API_KEY: {e}") from e
            except tavily_errors.BadRequestError as e:
                raise SearchError(f"Tavily rejected the request: {e}") from e
            except httpx.HTTPStatusError as e:
                raise SearchError(f"Tavily answered HTTP {e.response.status_code}") from e
            except (httpx.HTTPError, tavily_errors.TimeoutError) as e:
                raise SearchError(f"Tavily unreachable: {type(e).__name__}: {e}") from e
            except ValueError as e:  # a 200 whose body is not JSON
                raise SearchError(f"Tavily sent a body that is not JSON: {e}") from e
        return self._parse(payload)

    @staticmethod
    def _parse(payload: Any) -> list[SearchResult]:
        if not isinstance(payload, dict) or not isinstance(payload.get("results", []), list):
            raise SearchError("Tavily sent an unexpected payload")
        results = []
        answer = payload.get("answer")
        if isinstance(answer, str) and answer.strip():
            results.append(SearchResult(title="Answer", content=answer.strip()))
        for item in payload.get("results") or []:
            if isinstance(item, dict) and isinstance(item.get("content"), str):
                results.append(
                    SearchResult(
                        title=str(item.get("title") or ""),
                        content=item["content"].strip(),
                        url=str(item.get("url") or ""),
                    )
                )
        return results


# --------------------------------------------------------------------------------------
# The tool
# --------------------------------------------------------------------------------------


def web_search_schema(handler=None) -> FunctionSchema:
    """The tool as the LLM sees it (the handler runs it in a session)."""
    return FunctionSchema(
        name=TOOL_NAME,
        description=TOOL_DESCRIPTION,
        properties={"query": {"type": "string", "description": "What to look up, in a few words."}},
        required=["query"],
        handler=handler,
    )


def format_results(query: str, results: list[SearchResult], max_chars: int) -> str:
    """Results as compact text for the LLM, never longer than `max_chars`."""
    if not results:
        return f"No results for '{query}'. Say you could not find it."
    lines = [f"Search results for '{query}':"]
    for r in results:
        lines.append(f"- {r.title}: {r.content}" if r.title else f"- {r.content}")
    text = "\n".join(lines)
    if len(text) > max_chars:
        text = text[: max(0, max_chars - 1)].rstrip() + "…"
    return text


class WebSearchTool:
    """`web_search(query)` for one session: schema + handler, filler and apology."""

    def __init__(
        self,
        backend: SearchBackend,
        *,
        timeout_secs: float,
        max_result_chars: int,
        filler: str = "Let me look that up.",
        apology: str = "Sorry, I couldn't look that up right now.",
    ):
        self.backend = backend
        self.timeout_secs = timeout_secs
        self.max_result_chars = max_result_chars
        self.filler = filler
        self.apology = apology
        self.calls: list[dict] = []  # query, outcome, ms: for logs, admin and tests
        # One search per user turn: the user message it answered, and what it found.
        self._turn_message: dict | None = None
        self._turn_results: list[SearchResult] = []

        # Pipecat's own per-tool timeout is only a backstop: ours answers first, with speech.
        @tool_options(timeout_secs=timeout_secs + ANSWER_TIMEOUT_SECS + 5.0)
        async def web_search(params: FunctionCallParams) -> None:
            await self._run(params)

        self.schema = web_search_schema(handler=web_search)

    async def _run(self, params: FunctionCallParams) -> None:
        query = str((params.arguments or {}).get("query") or "").strip()[:300]
        started = time.monotonic()
        turn = _last_user_message(params.context.messages)
        if turn is not None and turn is self._turn_message:
            await self._read_out(params, query)
            return
        self._turn_message, self._turn_results = turn, []
        if self.filler:
            # Spoken while the search (and the answer after it) is prepared; not context.
            await params.llm.push_frame(TTSSpeakFrame(self.filler, append_to_context=False))
        outcome = "ok"
        try:
            if not query:
                raise SearchError("the call had no query")
            results = await asyncio.wait_for(self.backend.search(query), self.timeout_secs)
        except TimeoutError:
            outcome, detail = "timeout", f"no answer within {self.timeout_secs:g} s"
        except Exception as e:  # noqa: BLE001 - any failure becomes an apology
            outcome, detail = "error", str(e) or type(e).__name__
        ms = round(1000 * (time.monotonic() - started))
        if outcome == "ok" and not results:
            outcome = "empty"
        self.calls.append({"query": query, "outcome": outcome, "ms": ms})
        if outcome == "empty":
            await self._answer_without_search(params, query)
            return
        if outcome != "ok":
            logger.warning(f"web_search({query!r}) via {self.backend.name} failed: {detail}")
            # Say sorry ourselves and end the turn: a small model asked to explain a failure
            # may ramble or call the tool again.
            await params.llm.push_frame(TTSSpeakFrame(self.apology))
            await params.result_callback(
                {"error": f"search failed ({outcome}); the user has been told"},
                properties=FunctionCallResultProperties(run_llm=False),
            )
            return
        self._turn_results = results
        text = format_results(query, results, self.max_result_chars)
        logger.info(
            f"web_search({query!r}) via {self.backend.name}: {len(results)} results in {ms} ms"
        )
        await params.result_callback(text)

    async def _answer_without_search(self, params: FunctionCallParams, query: str) -> None:
        """Nothing found: the question was not one for the tool (small models over-call it,
        e.g. for "What is the capital of France?"). The LLM answers it again, offered no
        tools, and the bot says that answer; a model that cannot do that gets a plain
        "nothing found"."""
        history = list(params.context.messages)
        last = _last_user_message(history)
        if last is not None:
            history = history[: max(i for i, m in enumerate(history) if m is last) + 1]
        answer = None
        try:
            answer = await asyncio.wait_for(
                params.llm.run_inference(LLMContext(messages=history)), ANSWER_TIMEOUT_SECS
            )
        except Exception as e:  # noqa: BLE001 - NotImplementedError, timeouts, HTTP errors
            logger.debug(f"web_search: no tool-free answer ({type(e).__name__}: {e})")
        answer = (answer or "").strip()
        if not answer or answer.startswith(("{", "[", "<", "`")):
            answer = "I couldn't find anything about that."
        logger.info(f"web_search({query!r}) found nothing; answered without it")
        await params.llm.push_frame(TTSSpeakFrame(answer))
        await params.result_callback(
            f"No results for '{query}'; the user got an answer without the search.",
            properties=FunctionCallResultProperties(run_llm=False),
        )

    async def _read_out(self, params: FunctionCallParams, query: str) -> None:
        """A second call in the same user turn: the model did not use the results it got.

        Small models do this (the 0.5B local one almost always), and each call would run
        the LLM again: a loop of fillers. Instead the bot reads the best result itself and
        the turn ends.
        """
        self.calls.append({"query": query, "outcome": "repeat", "ms": 0})
        best = self._turn_results[0].content if self._turn_results else ""
        spoken = (
            f"Here's what I found: {_first_sentences(best)}"
            if best
            else ("I couldn't find anything about that.")
        )
        logger.info("web_search called again in the same turn; reading the best result out")
        await params.llm.push_frame(TTSSpeakFrame(spoken))
        await params.result_callback(
            "Already searched this turn; the best result was read to the user.",
            properties=FunctionCallResultProperties(run_llm=False),
        )


def _last_user_message(messages: list) -> dict | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def _first_sentences(text: str, limit: int = 260) -> str:
    """As much of `text` as fits in `limit` characters, cut at a sentence end if possible."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    return cut[: end + 1] if end > 40 else cut.rsplit(" ", 1)[0] + "…"
