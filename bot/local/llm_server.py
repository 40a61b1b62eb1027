"""A loopback OpenAI-compatible chat-completions server around llama.cpp.

Run as `python -m bot.local.llm_server --model X.gguf --port N`; `bot.local.llm_process`
starts it. Speaking the OpenAI wire protocol lets the local LLM and Groq share one Pipecat
code path (`OpenAILLMService`), tool calls included.

Why not llama-cpp-python's own server (`llama_cpp.server`), which speaks the same protocol
through the same `Llama.create_chat_completion` (chat template, sampling) used here: it
does not do what a small model in a voice loop needs,
- a KV cache per conversation (OpenAI's `user`), shifted when the context budget drops
  the oldest turns (bot/local/llm_cache.py): its caches reuse a common token prefix only,
  so once a conversation fills its budget every turn re-reads its whole history;
- tool calls the model writes as text made into `tool_calls` deltas, and an answer that is
  neither speech nor a usable call generated again without tools (bot/local/chat_format.py);
- generation stopped as soon as a call is written, or the client has gone;
- a reply opened with a turn-completion marker when the request names them (`turn_markers`,
  bot/local/turn_markers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from llama_cpp import LogitsProcessorList
from loguru import logger
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bot.local.chat_format import (
    TOOL_CALL_OPEN,
    extract_tool_calls,
    looks_like_call_start,
    normalise_messages,
    text_of,
)
from bot.local.turn_markers import TurnMarkerChoice, unspoken_left_out

# --------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------


class Engine:
    """One llama.cpp model; one generation at a time (a second request waits)."""

    def __init__(
        self, model_path: str, threads: int, n_ctx: int, model_name: str, shift: bool = True
    ):
        from bot.local.llm_cache import ContextShiftingLlama, ConversationCaches

        self.model_name = model_name
        self.llm = ContextShiftingLlama(
            shift=shift,
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.lock = threading.Lock()
        self.caches = ConversationCaches(self.llm)

    def stream(self, body: dict, cancelled: threading.Event) -> Iterator[str]:
        """Yield text pieces of the completion until done or cancelled."""
        kwargs: dict[str, Any] = {
            "messages": normalise_messages(body.get("messages", [])),
            "temperature": float(body.get("temperature", 0.3)),
            "top_p": float(body.get("top_p", 0.95)),
            "max_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
            "stream": True,
        }
        if body.get("tools") and body.get("tool_choice") != "none":
            kwargs["tools"] = body["tools"]
        if body.get("seed") is not None:
            kwargs["seed"] = int(body["seed"])
        if body.get("turn_markers") is not None:  # ours, not OpenAI's: bot/local/turn_markers.py
            kwargs["logits_processor"] = LogitsProcessorList(
                [TurnMarkerChoice.for_model(self.llm, body["turn_markers"])]
            )
            kwargs["messages"] = unspoken_left_out(kwargs["messages"], body["turn_markers"][0])
        with self.lock:
            # Each conversation (OpenAI's `user` field) gets its own cache back; another's
            # may hold the same words, computed with that conversation in view.
            self.caches.switch_to(body.get("user"))
            chunks = self.llm.create_chat_completion(**kwargs)
            try:
                for chunk in chunks:
                    if cancelled.is_set():
                        return
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
            finally:
                chunks.close()


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


async def _pieces(engine: Engine, body: dict, cancelled: threading.Event) -> AsyncIterator[str]:
    """Run the blocking generator in a thread, handing pieces to the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

    def produce():
        try:
            for piece in engine.stream(body, cancelled):
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except BaseException as e:  # noqa: BLE001 - forwarded to the request
            loop.call_soon_threadsafe(queue.put_nowait, e)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancelled.set()


def _speakable(text: str) -> bool:
    """Text a person could hear: not empty, not JSON, not tool markup."""
    s = text.strip().strip("`").strip()
    return bool(s) and not s.startswith(("{", "<", "[")) and '"name"' not in s


def _first_json_object(text: str) -> str | None:
    """The first complete `{...}` object in `text`, or None while it may still be growing."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    return text[start : start + end]


_STOPWORDS = frozenset(
    "the and for are was were what which who whom whose when where why how does did can could "
    "would should will you your yours our ours their them they this that these those with from "
    "about into tell please just some any have has had not but its it's is".split()
)


def _content_words(text: str) -> set[str]:
    return {
        w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3 and w not in _STOPWORDS
    }


def _last_user_words(messages: list) -> set[str]:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_words(text_of(message.get("content")))
    return set()


def _about_the_user(call: dict, user_words: set[str]) -> bool:
    """Whether a call's arguments share a word (or a word's stem) with what the user said.

    The 0.5B model sometimes answers "What is the capital of France?" with a search for
    something from its instructions ("Brightline Telecom help page"); a search that shares
    nothing with the question is not the user's.
    """
    if not user_words:
        return True  # nothing to compare with ("?", "hi")
    words = _content_words(" ".join(str(v) for v in call["arguments"].values()))
    stems = {w[:4] for w in user_words}
    return any(w in user_words or w[:4] in stems for w in words)


def _calls_for_the_user(calls: list[dict], body: dict) -> list[dict]:
    user_words = _last_user_words(body.get("messages", []))
    kept = [c for c in calls if _about_the_user(c, user_words)]
    for call in calls:
        if call not in kept:
            logger.info(
                f"Dropped a {call['name']} call unrelated to the user's words: {call['arguments']}"
            )
    return kept


def _without_tools(body: dict) -> dict:
    return {**body, "tools": None, "tool_choice": "none"}


async def _speech_or_calls(
    engine: Engine, body: dict, tool_names: set[str], *, hold_markup: bool = False
) -> AsyncIterator[tuple[str, Any]]:
    """Generate, yielding ("text", piece) for speech as it comes, or one ("calls", [...]).

    Text that may be the start of a call is held back until it is clearly speech. Once a
    whole JSON object has been written the answer is known: generation stops there (the
    small model otherwise repeats its call until max_tokens).
    """
    held, full, streaming = "", "", not tool_names and not hold_markup
    cancelled = threading.Event()
    async with contextlib.aclosing(_pieces(engine, body, cancelled)) as pieces:
        async for piece in pieces:
            full += piece
            if streaming:
                if tool_names and TOOL_CALL_OPEN in full:  # a call after some speech: stop speaking
                    streaming = False
                    held = full[full.index(TOOL_CALL_OPEN) :]
                    continue
                yield "text", piece
                continue
            held += piece
            if TOOL_CALL_OPEN not in full and not looks_like_call_start(held):
                streaming = True
                yield "text", held
                held = ""
            elif _first_json_object(held) is not None:
                break  # aclosing cancels the generation
    if not tool_names:
        if held and _speakable(held):
            yield "text", held
        return
    spoken, calls = extract_tool_calls(full, tool_names)
    calls = _calls_for_the_user(calls, body)
    if calls:
        yield "calls", calls
    elif held and _speakable(held) and _speakable(spoken):
        yield "text", held


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
    text = "".join([p async for p in _pieces(engine, body, threading.Event())])
    content, calls = extract_tool_calls(text, tool_names) if tool_names else (text, [])
    calls = _calls_for_the_user(calls, body)
    if tool_names and not calls and not _speakable(content):
        text = "".join([p async for p in _pieces(engine, _without_tools(body), threading.Event())])
        content = text if _speakable(text) else ""
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
    spoke = False
    async for kind, value in _speech_or_calls(engine, body, tool_names):
        if kind == "calls":
            yield _chunk(model, cid, {"tool_calls": _tool_call_deltas(value)})
            yield _chunk(model, cid, {}, "tool_calls")
            yield "data: [DONE]\n\n"
            return
        spoke = True
        yield _chunk(model, cid, {"content": value})
    if not spoke and tool_names:
        # Neither speech nor a call we can make (a call to a tool that does not exist, the
        # tool list echoed back): answer again without tools, never leave the caller in
        # silence.
        async for _, value in _speech_or_calls(
            engine, _without_tools(body), set(), hold_markup=True
        ):
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
