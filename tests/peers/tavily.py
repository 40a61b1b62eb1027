"""Tavily Search REST API over loopback HTTP.

Follows (as read 2026-12-04): https://docs.tavily.com/documentation/api-reference/introduction
(base URL, `Authorization: Bearer tvly-...`), https://docs.tavily.com/documentation/api-reference/
endpoint/search (request, response, error codes) and https://docs.tavily.com/documentation/
rate-limits, as spoken by tavily-python 0.8.5 (`AsyncTavilyClient.search`):

- `POST /search` with a JSON body: `query` (required), `search_depth` ("basic" |
  "advanced" | "fast" | "ultra-fast"), `max_results` (0..20, default 5), `topic`,
  `include_answer` (bool | "basic" | "advanced"), `include_raw_content`,
  `include_images`, `include_domains`, `exclude_domains`, ... The key is accepted as
  `Authorization: Bearer <key>` or, as older clients send it, an `api_key` body field.
- Response: `{query, answer, images, results: [{title, url, content, score,
  raw_content}], follow_up_questions, response_time, request_id}`; `answer` is null
  unless `include_answer` was requested.
- Errors, each `{"detail": {"error": ...}}`: 401 for a missing or bad key, 400 for a
  missing query or bad parameter, 429 (rate limit, `Retry-After`), 432 (the plan's usage
  limit), 433 (the pay-as-you-go limit), 500 (`Fault.HTTP_*`).
- Latency: real searches take time, more with `include_answer` (an LLM writes the answer):
  `latency_secs` per search plus `answer_latency_secs` when an answer is asked for.

Results are scripted per query (`add_results`), else generated from the query.
"""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from tests.peers._server import PeerServer
from tests.peers.faults import Fault, malformed_payload

DEPTHS = ("basic", "advanced", "fast", "ultra-fast")


class TavilyPeer(PeerServer):
    name = "tavily"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency_secs: float = 0.3,
        answer_latency_secs: float = 0.7,
    ):
        super().__init__(api_key=api_key)
        self.latency_secs = latency_secs
        self.answer_latency_secs = answer_latency_secs
        self.scripted: dict[str, dict] = {}  # query -> {"results": [...], "answer": str}
        self.searches: list[dict] = []  # every accepted search request body

    def add_results(self, query: str, results: list[dict], answer: str | None = None) -> None:
        self.scripted[query] = {"results": results, "answer": answer}

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/search", self._search)

    def error_body(self, status: int, message: str) -> dict:
        documented = {
            429: "Your request has been blocked due to excessive requests.",
            432: "This request exceeds your plan's set usage limit. Please upgrade your plan.",
            433: "This request exceeds the pay-as-you-go limit. You can increase your limit "
            "on the Tavily dashboard.",
        }
        return {"detail": {"error": documented.get(status, message)}}

    async def _search(self, request: web.Request):
        rec = await self.record(request)
        body = rec.body if isinstance(rec.body, dict) else None
        key = self.bearer(request) or (body or {}).get("api_key")
        if not key or not self.key_ok(key):
            return self.error_response(401, "Unauthorized: missing or invalid API key.")
        if body is None or not isinstance(body.get("query"), str) or not body["query"].strip():
            return self.error_response(400, "query is required")
        depth = body.get("search_depth", "basic")
        max_results = body.get("max_results", 5)
        if depth not in DEPTHS:
            return self.error_response(400, f"search_depth must be one of {DEPTHS}")
        if not isinstance(max_results, int) or not 0 <= max_results <= 20:
            return self.error_response(400, "max_results must be an integer from 0 to 20")
        self.searches.append(body)
        await self.changed()

        spec, response = await self.http_fault(request)
        if response is not None:
            return response

        started = time.monotonic()
        answering = bool(body.get("include_answer"))
        await self.faults.sleep(self.latency_secs + self.answer_latency_secs * answering)
        query = body["query"]
        scripted = self.scripted.get(query)
        results = (
            scripted["results"]
            if scripted
            else [
                {
                    "title": f"Result {i + 1} for {query}",
                    "url": f"https://example.com/{i + 1}",
                    "content": f"Loopback content {i + 1} about {query}.",
                    "score": round(0.9 - 0.1 * i, 3),
                }
                for i in range(3)
            ]
        )[:max_results]
        include_raw = body.get("include_raw_content")
        results = [
            {
                "title": r["title"],
                "url": r["url"],
                "content": r["content"],
                "score": r.get("score", 0.5),
                "raw_content": r.get("raw_content", r["content"]) if include_raw else None,
            }
            for r in results
        ]
        answer = None
        if body.get("include_answer"):
            answer = (scripted or {}).get("answer") or (
                results[0]["content"] if results else "No answer found."
            )
        payload = {
            "query": query,
            "answer": answer,
            "images": [],
            "results": results,
            "follow_up_questions": None,
            "response_time": round(time.monotonic() - started, 3),
            "request_id": str(uuid.uuid4()),
        }
        if spec is not None and spec.kind is Fault.MALFORMED:
            return web.Response(
                text=malformed_payload(spec.variant, {"query": query, "results": "none"}),
                content_type="application/json",
            )
        return web.json_response(payload)
