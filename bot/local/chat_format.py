"""What a small local model writes and reads, in OpenAI's terms.

Small Qwen models write tool calls as text (`<tool_call>{"name": ..., "arguments": ...}
</tool_call>`, or a bare JSON object) instead of structured calls: `extract_tool_calls`
turns that text into calls. `normalise_messages` turns OpenAI messages into what the
model's chat template expects.
"""

from __future__ import annotations

import json
import re
from typing import Any

TOOL_CALL_OPEN = "<tool_call>"
_TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


# --------------------------------------------------------------------------------------
# Tool-call text → structured calls
# --------------------------------------------------------------------------------------


def _loads_lenient(candidate: str) -> Any:
    """JSON, tolerating the closing braces a small model sometimes forgets."""
    for suffix in ("", "}", "}}"):
        try:
            return json.loads(candidate + suffix)
        except json.JSONDecodeError:
            continue
    return None


def _parse_call(candidate: str, tool_names: set[str]) -> dict | None:
    obj = _loads_lenient(candidate)
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    if "function" in obj and isinstance(obj["function"], dict):  # {"function": {...}} variant
        name = obj["function"].get("name")
        obj = obj["function"]
    if not isinstance(name, str) or (tool_names and name not in tool_names):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = {"query": arguments}
    if not isinstance(arguments, dict):
        return None
    return {"name": name, "arguments": arguments}


def extract_tool_calls(text: str, tool_names: set[str]) -> tuple[str, list[dict]]:
    """Split model output into (spoken text, tool calls).

    Recognises `<tool_call>…</tool_call>` blocks and a reply that is only a JSON call
    object (optionally in a ``` fence). Calls to tools that were not offered are not
    calls: the text is returned unchanged.
    """
    calls = []
    if TOOL_CALL_OPEN in text:
        for block in _TOOL_CALL_BLOCK.findall(text):
            call = _parse_call(block.strip().strip("`"), tool_names)
            if call:
                calls.append(call)
        if calls:
            return text[: text.index(TOOL_CALL_OPEN)].strip(), calls
        return text, []
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, re.DOTALL)
    if fenced:
        stripped = fenced.group(1)
    if stripped.startswith("{"):
        call = _parse_call(stripped, tool_names) or _salvage_call(stripped, tool_names)
        if call:
            return "", [call]
        if '"name"' in stripped:
            return "", []  # a call we could not read: never speak JSON aloud
    return text, []


def _salvage_call(text: str, tool_names: set[str]) -> dict | None:
    """A call whose JSON is broken beyond a missing brace: pick out the name and string args."""
    name = re.search(r'"name"\s*:\s*"([^"]+)"', text)
    if not name or (tool_names and name.group(1) not in tool_names):
        return None
    body = text[name.end() :]
    arguments = dict(re.findall(r'"(\w+)"\s*:\s*"((?:[^"\\]|\\.)*)"', body))
    arguments.pop("name", None)
    return {"name": name.group(1), "arguments": arguments}


def looks_like_call_start(text: str) -> bool:
    """Whether streamed text so far may be the start of a tool call (so hold it back)."""
    s = text.lstrip()
    if not s:
        return True
    if s.startswith("<"):  # tool markup, or the tool list echoed back: never speech
        return True
    for marker in (TOOL_CALL_OPEN, "```", "{"):
        if s.startswith(marker) or marker.startswith(s):
            return True
    return False


# --------------------------------------------------------------------------------------
# Request normalisation
# --------------------------------------------------------------------------------------


def text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def normalise_messages(messages: list[dict]) -> list[dict]:
    """OpenAI messages → what a Hugging Face chat template expects.

    `developer` becomes `system`; consecutive system messages merge into the first so
    the prompt prefix (and llama.cpp's cache of it) stays stable; tool-call arguments
    become dicts, since templates serialise them with `tojson`; a tool result is given
    as a user message (see below).
    """
    out: list[dict] = []
    for m in messages:
        role = m.get("role", "user")
        if role == "developer":
            role = "system"
        msg: dict[str, Any] = {"role": role, "content": text_of(m.get("content"))}
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for tc in m["tool_calls"]:
                fn = tc.get("function", {})
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args or "{}")
                    except json.JSONDecodeError:
                        args = {}
                calls.append(
                    {"type": "function", "function": {"name": fn.get("name"), "arguments": args}}
                )
            msg["tool_calls"] = calls
        if role == "tool":
            # Small models answer from a tool result they are *told* (9/9 measured) but
            # not from the template's tool turn (0/9: they call the tool again).
            msg = {
                "role": "user",
                "content": f"Here is what the search found:\n{msg['content']}\n"
                "Answer my question from it, in one or two spoken sentences.",
            }
        if role == "system" and out and out[-1]["role"] == "system" and len(out) == 1:
            out[-1]["content"] += "\n\n" + msg["content"]
            continue
        out.append(msg)
    return out
