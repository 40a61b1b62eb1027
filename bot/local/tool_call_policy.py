"""What a reply of the small local model is taken as: speech, tool calls, or neither.

The model writes its tool calls as text (bot/local/chat_format.py reads them), sometimes
after some speech, sometimes to a tool that does not exist, sometimes about something from
its instructions instead of the user's words. bot/local/llm_server.py serves every reply
through these rules:
- text that may be the start of a call is held back until it is clearly speech, and the
  generation stops once a whole call is written (the model otherwise repeats it);
- a call that shares no word with what the user said is dropped (`_about_the_user`);
- a reply that is neither speech nor a usable call is generated again without tools: the
  caller is never left in silence.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

from loguru import logger

from bot.local.chat_format import (
    TOOL_CALL_OPEN,
    extract_tool_calls,
    looks_like_call_start,
    text_of,
)
from bot.local.llm_engine import Engine, pieces


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
    async with contextlib.aclosing(pieces(engine, body, cancelled)) as generated:
        async for piece in generated:
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


async def streamed_reply(
    engine: Engine, body: dict, tool_names: set[str]
) -> AsyncIterator[tuple[str, Any]]:
    """A reply as it is generated: ("text", piece) for speech as it comes, or one
    ("calls", [...]). With neither speech nor a call we can make (a call to a tool that does
    not exist, the tool list echoed back), the reply is generated again without tools."""
    spoke = False
    async for kind, value in _speech_or_calls(engine, body, tool_names):
        yield kind, value
        if kind == "calls":
            return
        spoke = True
    if not spoke and tool_names:
        async for event in _speech_or_calls(engine, _without_tools(body), set(), hold_markup=True):
            yield event


async def whole_reply(engine: Engine, body: dict, tool_names: set[str]) -> tuple[str, list[dict]]:
    """A whole (non-streamed) reply: its speech ("" for none) and the calls kept."""
    text = "".join([p async for p in pieces(engine, body, threading.Event())])
    content, calls = extract_tool_calls(text, tool_names) if tool_names else (text, [])
    calls = _calls_for_the_user(calls, body)
    if tool_names and not calls and not _speakable(content):
        text = "".join([p async for p in pieces(engine, _without_tools(body), threading.Event())])
        content = text if _speakable(text) else ""
    return content, calls
