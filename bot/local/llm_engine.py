"""The local LLM's engine: one llama.cpp model (`Engine`), a KV cache kept per conversation
(bot/local/llm_cache.py), one generation at a time. bot/local/llm_server.py serves it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from llama_cpp import LogitsProcessorList

from bot.local.chat_format import normalise_messages
from bot.local.turn_markers import TurnMarkerChoice, unspoken_left_out


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


async def pieces(engine: Engine, body: dict, cancelled: threading.Event) -> AsyncIterator[str]:
    """`engine.stream` run in a thread, its pieces handed to the event loop; `cancelled` is
    set once the caller stops reading (the generation then stops at its next piece)."""
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
