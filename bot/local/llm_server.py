"""A loopback OpenAI-compatible chat-completions server around llama.cpp.

Run as `python -m bot.local.llm_server --model X.gguf --port N`; `bot.local.llm_process`
starts it. Speaking the OpenAI wire protocol lets the local LLM and Groq share one Pipecat
code path (`OpenAILLMService`), tool calls included. This module is the HTTP app and its
command line; the model is `Engine` (bot/local/llm_engine.py), and what a reply is taken
as, speech or tool calls, is bot/local/tool_call_policy.py's.

Why not llama-cpp-python's own server (`llama_cpp.server`), which speaks the same protocol
through the same `Llama.create_chat_completion` (chat template, sampling) used here: it
does not do what a small model in a voice loop needs,
- a KV cache per conversation (OpenAI's `user`), shifted when the context budget drops
  the oldest turns (bot/local/llm_cache.py): its caches reuse a common token prefix only,
  so once a conversation fills its budget every turn re-reads its whole history;
- tool calls the model writes as text made into `tool_calls` deltas, and an answer that is
  neither speech nor a usable call generated again without tools (bot/local/chat_format.py,
  bot/local/tool_call_policy.py);
- generation stopped as soon as a call is written (tool_call_policy.py), or the client has
  gone;
- a reply opened with a turn-completion marker when the request names them (`turn_markers`,
  bot/local/turn_markers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from loguru import logger
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bot.local.llm_engine import Engine
from bot.local.tool_call_policy import streamed_reply, whole_reply
from bot.local.turn_markers import TurnMarkerChoice


def _chunk(model: str, cid: str, delta: dict, finish: str | None = None) -> str:
    payload = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n"


def _tool_call_deltas(calls: list[dict]) -> list[dict]:
    return [
        {
            "index": i,
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for i, c in enumerate(calls)
    ]


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="local llama.cpp (OpenAI-compatible)")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.model_name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except json.JSONDecodeError as e:
            raise HTTPException(400, f"body is not JSON: {e}") from e
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise HTTPException(400, "body must be an object with a 'messages' list")
        offered = body.get("tools") if body.get("tool_choice") != "none" else None
        tool_names = {
            t.get("function", {}).get("name") for t in offered or [] if isinstance(t, dict)
        }
        tool_names.discard(None)
        if body.get("turn_markers") is not None:
            try:
                TurnMarkerChoice.for_model(engine.llm, body["turn_markers"])
            except ValueError as e:
                raise HTTPException(400, str(e)) from e
        cid = f"chatcmpl-{uuid.uuid4().hex[:16]}"

        if not body.get("stream"):
            try:
                return await _complete(engine, body, tool_names, cid)
            except Exception as e:  # noqa: BLE001 - the engine's failure, told to the client
                logger.exception("The model failed a completion")
                return JSONResponse(_error(e), status_code=500)

        async def events() -> AsyncIterator[str]:
            try:
                async for event in _stream(engine, body, tool_names, cid):
                    yield event
            except Exception as e:  # noqa: BLE001 - headers are sent: an error event instead
                logger.exception("The model failed a streamed completion")
                yield f"data: {json.dumps(_error(e))}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _error(e: Exception) -> dict:
    """OpenAI's error shape: the SDK raises it as an APIError with this message, streamed or not."""
    return {
        "error": {
            "message": f"the local model failed: {type(e).__name__}: {e}",
            "type": "server_error",
        }
    }


async def _complete(engine: Engine, body: dict, tool_names: set[str], cid: str) -> JSONResponse:
    """A whole (non-streamed) chat completion."""
    content, calls = await whole_reply(engine, body, tool_names)
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = _tool_call_deltas(calls)
        for tc in message["tool_calls"]:
            tc.pop("index")
    return JSONResponse(
        {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": engine.model_name,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
            ],
        }
    )


async def _stream(engine: Engine, body: dict, tool_names: set[str], cid: str) -> AsyncIterator[str]:
    """A streamed chat completion's server-sent events."""
    model = engine.model_name
    yield _chunk(model, cid, {"role": "assistant", "content": ""})
    async for kind, value in streamed_reply(engine, body, tool_names):
        if kind == "calls":
            yield _chunk(model, cid, {"tool_calls": _tool_call_deltas(value)})
            yield _chunk(model, cid, {}, "tool_calls")
            yield "data: [DONE]\n\n"
            return
        yield _chunk(model, cid, {"content": value})
    yield _chunk(model, cid, {}, "stop")
    yield "data: [DONE]\n\n"


def _exit_with_parent(parent_pid: int) -> None:
    """Stop serving when the process that started us is gone (no orphans)."""

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-name", default="local")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument(
        "--no-context-shift",
        dest="context_shift",
        action="store_false",
        help="Re-read the history after dropped turns (bot/local/llm_cache.py).",
    )
    args = parser.parse_args()
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    engine = Engine(args.model, args.threads, args.ctx, args.model_name, shift=args.context_shift)
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
