"""Groq's OpenAI-compatible chat completions API over loopback HTTP.

Follows (as read 2026-12-04) https://console.groq.com/docs/api-reference (chat
completions, models), https://console.groq.com/docs/errors (error body; 429 with
`retry-after` in seconds; a tool call that fails mid-stream arrives as an SSE `error`
event with code `tool_use_failed` after a 200), https://console.groq.com/docs/tool-use,
https://console.groq.com/docs/rate-limits and https://console.groq.com/docs/deprecations
(`llama-3.3-70b-versatile` decommissioned 2026-08-16, replaced by `openai/gpt-oss-120b`),
and the OpenAI chat completions wire format it mirrors (request body,
`chat.completion` / `chat.completion.chunk`, server-sent events ending with
`data: [DONE]`, streamed `delta.tool_calls` fragments):

- `POST /openai/v1/chat/completions` (also `/v1/chat/completions`): `stream: true` sends
  SSE chunks — a first chunk with `delta.role`, content chunks token by token (with a
  configurable delay), a last chunk with `finish_reason` and Groq's `x_groq.usage`, and a
  usage-only chunk when `stream_options.include_usage` is set; `stream: false` returns
  one `chat.completion`. Tool calls stream as `delta.tool_calls[{index, id, type,
  function: {name, arguments}}]` with the arguments split in fragments, and finish with
  `finish_reason: "tool_calls"`.
- `GET /openai/v1/models` (also `/v1/models`): the model list (`models`).
- Models: a model in `decommissioned` gets HTTP 400 `model_decommissioned`, one not in
  `models` HTTP 404 `model_not_found`, on every request.
- Auth: `Authorization: Bearer <key>`; a bad key gets HTTP 401 with an OpenAI-style
  error body (`invalid_api_key`). A body without `model` or `messages` gets HTTP 400.
- `reply_tool_call(..., preamble="Let me check.")`: text streamed before the tool call
  in the same response, as Groq's models do.
- `reply_midstream_error(after_text=...)`: HTTP 200, some content, then `data:
  {"error": {"message", "type", "code": "tool_use_failed", "failed_generation"}}` and
  the stream ends (no `[DONE]`).

Replies are scripted: a queue of `TextReply` / `ToolCallReply`, one per completion
request. Every request body is recorded in `completions` (so a test can check that a tool
result came back in the next request's messages).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from tests.peers._server import PeerServer
from tests.peers.faults import Fault, malformed_payload

DEFAULT_MODELS = (
    "openai/gpt-oss-120b",
    "openai/gpt-oss-20b",
    "llama-3.1-8b-instant",
    "qwen/qwen3-32b",
)
DECOMMISSIONED = ("llama-3.3-70b-versatile", "llama3-70b-8192", "gemma2-9b-it")


@dataclass
class TextReply:
    text: str
    token_delay: float | None = None  # seconds between tokens; None: the peer's default


@dataclass
class ToolCall:
    name: str
    arguments: dict
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:20]}")


@dataclass
class ToolCallReply:
    calls: list[ToolCall]
    token_delay: float | None = None
    preamble: str = ""  # text streamed before the call, in the same response


@dataclass
class MidStreamError:
    after_text: str = ""
    code: str = "tool_use_failed"
    message: str = "Failed to call a function. Please adjust your prompt."
    token_delay: float | None = None


def tokens(text: str) -> list[str]:
    """Split text into stream tokens whose concatenation is exactly `text`."""
    return re.findall(r"\s*\S+|\s+$", text) or [text]


class GroqPeer(PeerServer):
    name = "groq"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token_delay: float = 0.0,
        models: tuple[str, ...] = DEFAULT_MODELS,
        decommissioned: tuple[str, ...] = DECOMMISSIONED,
        check_models: bool = True,
        default_reply: str = "I have nothing scripted to say.",
    ):
        super().__init__(api_key=api_key)
        self.replies: deque[TextReply | ToolCallReply | MidStreamError] = deque()
        self.token_delay = token_delay
        self.models = models
        self.decommissioned = decommissioned
        self.check_models = check_models
        self.default_reply = default_reply
        self.completions: list[dict] = []  # every chat completion request body, in order
        self.chunks_sent = 0

    def reply_text(self, text: str, token_delay: float | None = None) -> None:
        self.replies.append(TextReply(text, token_delay))

    def reply_tool_call(
        self, name: str, arguments: dict, call_id: str | None = None, preamble: str = ""
    ) -> ToolCall:
        call = ToolCall(name, arguments, **({"id": call_id} if call_id else {}))
        self.replies.append(ToolCallReply([call], preamble=preamble))
        return call

    def reply_midstream_error(self, after_text: str = "", **kwargs) -> None:
        self.replies.append(MidStreamError(after_text, **kwargs))

    def setup_routes(self, app: web.Application) -> None:
        for prefix in ("/openai/v1", "/v1"):
            app.router.add_post(f"{prefix}/chat/completions", self._chat_completions)
            app.router.add_get(f"{prefix}/models", self._models)

    def error_body(self, status: int, message: str) -> dict:
        kind, code = {
            401: ("invalid_request_error", "invalid_api_key"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("tokens", "rate_limit_exceeded"),
            500: ("internal_server_error", "internal_server_error"),
        }.get(status, ("invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "code": code}}

    # --- endpoints ------------------------------------------------------------------------

    async def _models(self, request: web.Request):
        await self.record(request)
        if not self.key_ok(self.bearer(request)):
            return self.error_response(401, "Invalid API Key")
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": m,
                        "object": "model",
                        "created": 1700000000,
                        "owned_by": "loopback-peer",
                        "active": True,
                        "context_window": 131072,
                    }
                    for m in self.models
                ],
            }
        )

    async def _chat_completions(self, request: web.Request):
        rec = await self.record(request)
        if not self.key_ok(self.bearer(request)):
            return self.error_response(401, "Invalid API Key")
        body = rec.body
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return self.error_response(400, "'model' and 'messages' are required")
        model = body["model"]
        if self.check_models and model in self.decommissioned:
            error = {
                "message": f"The model `{model}` has been decommissioned and is no longer "
                "supported.",
                "type": "invalid_request_error",
                "code": "model_decommissioned",
            }
            return web.json_response({"error": error}, status=400)
        if self.check_models and model not in self.models:
            return self.error_response(
                404, f"The model `{model}` does not exist or you do not have access to it."
            )
        self.completions.append(body)
        await self.changed()

        spec, response = await self.http_fault(request)
        if response is not None:
            return response

        reply = self.replies.popleft() if self.replies else TextReply(self.default_reply)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            return await self._stream(request, body, reply, completion_id, spec)
        return self._complete(body, reply, completion_id, spec)

    # --- non-streaming --------------------------------------------------------------------

    def _complete(self, body, reply, completion_id, spec):
        if isinstance(reply, MidStreamError):
            error = {"message": reply.message, "type": "invalid_request_error", "code": reply.code}
            return web.json_response({"error": error}, status=400)
        if isinstance(reply, ToolCallReply):
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for c in reply.calls
                ],
            }
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": reply.text}
            finish = "stop"
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": self._usage(body, reply),
            "system_fingerprint": "fp_loopback",
            "x_groq": {"id": f"req_{uuid.uuid4().hex[:24]}"},
        }
        if spec is not None and spec.kind is Fault.MALFORMED:
            text = malformed_payload(spec.variant, {"id": completion_id, "choices": "none"})
            return web.Response(text=text, content_type="application/json")
        return web.json_response(payload)

    # --- streaming ------------------------------------------------------------------------

    async def _stream(self, request, body, reply, completion_id, spec):
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        created = int(time.time())

        def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "system_fingerprint": "fp_loopback",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **extra,
            }

        delay = reply.token_delay if reply.token_delay is not None else self.token_delay
        chunks: list[dict] = [chunk({"role": "assistant", "content": ""})]
        failure = None
        if isinstance(reply, MidStreamError):
            chunks.extend(chunk({"content": t}) for t in tokens(reply.after_text) if t)
            failure = {
                "error": {
                    "message": reply.message,
                    "type": "invalid_request_error",
                    "code": reply.code,
                    "failed_generation": '<function=web_search{"query": ',
                }
            }
        elif isinstance(reply, ToolCallReply):
            if reply.preamble:
                chunks.extend(chunk({"content": t}) for t in tokens(reply.preamble))
            for index, call in enumerate(reply.calls):
                chunks.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": call.id,
                                    "type": "function",
                                    "function": {"name": call.name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                arguments = json.dumps(call.arguments)
                for i in range(0, len(arguments), 8):
                    fragment = {"index": index, "function": {"arguments": arguments[i : i + 8]}}
                    chunks.append(chunk({"tool_calls": [fragment]}))
            finish = "tool_calls"
        else:
            chunks.extend(chunk({"content": t}) for t in tokens(reply.text))
            finish = "stop"
        usage = self._usage(body, reply)
        x_groq = {"id": f"req_{uuid.uuid4().hex[:24]}", "usage": usage}
        if failure is not None:
            chunks.append(failure)
        else:
            chunks.append(chunk({}, finish, x_groq=x_groq))
        if failure is None and (body.get("stream_options") or {}).get("include_usage"):
            final = chunk({}, None, usage=usage)
            final["choices"] = []
            chunks.append(final)

        for n, payload in enumerate(chunks):
            if spec is not None:
                if spec.kind is Fault.DISCONNECT and n >= spec.after:
                    return self.abort(request)
                if spec.kind is Fault.MALFORMED and n == spec.after:
                    bad = malformed_payload(spec.variant, {"id": completion_id, "choices": "none"})
                    await response.write(f"data: {bad}\n\n".encode())
                    self.chunks_sent += 1
                    continue
            if n > 0 and delay:
                await asyncio.sleep(delay)
            try:
                await response.write(f"data: {json.dumps(payload)}\n\n".encode())
            except (ConnectionError, RuntimeError):
                return response  # the client went away (e.g. an interruption)
            self.chunks_sent += 1
            await self.changed()
        if failure is None:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _usage(body: dict, reply) -> dict:
        prompt = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        if isinstance(reply, TextReply):
            completion = len(tokens(reply.text))
        elif isinstance(reply, ToolCallReply):
            completion = 8 * len(reply.calls)
        else:
            completion = len(tokens(reply.after_text))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
