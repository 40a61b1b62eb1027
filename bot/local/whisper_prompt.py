"""What Whisper reads before the user's words: the exchange they answer.

Whisper decodes an utterance as the continuation of its "previous text". Given the user's
last turn and the bot's answer to it, as the session's context holds them, it hears a
follow-up in the conversation's own words ("And what is that times three?" after "What is
five plus five? Ten.") and unfamiliar voices better overall: it is primed for a spoken
question in plain English (bench/RESULTS.md, "Whisper prompted with the conversation").
Before anything has been said it reads `opening`.

While the bot is answering (the context ends with the user's turn), words are spoken over
it — a barge-in, a backchannel — and answer nothing yet: Whisper reads no exchange then,
because primed with the user's own question it made words of hums ("Mm-hmm." → "And in
H&M.", which stopped the bot; bench.backchannels).
"""

from __future__ import annotations

import re
from typing import Any

from pipecat.processors.aggregators.llm_context import LLMContext, standard_message_text

# The bot's usual first words: primes the first turn like a conversation (measured).
OPENING = "Hello! How can I help you today?"
# Whisper keeps at most 223 tokens of previous text; the end of the exchange matters most,
# and every token is decoder work on each pass.
MAX_CHARS = 400
# A transcript sharing this many words in a row with its prompt is Whisper going on with the
# prompt, not hearing ("Tell me a long," became "Tell me along. Did I help you today?").
REPEATED_RUN = 4


class ConversationPrompt:
    """`prompt()`: `vocabulary` (names the user may say) and the exchange the user's next
    words answer in the context it follows, at most `max_chars` of it, cut at a word."""

    def __init__(self, vocabulary: str = "", opening: str = OPENING, max_chars: int = MAX_CHARS):
        self._vocabulary = vocabulary.strip()
        self._opening = opening
        self._max_chars = max_chars
        self._context: LLMContext | None = None

    def follow(self, context: LLMContext) -> None:
        self._context = context

    def __call__(self) -> str:
        exchange = answered_exchange(self._context) if self._context else None
        exchange = self._opening if exchange is None else exchange
        if len(exchange) > self._max_chars:
            cut = exchange[-self._max_chars :]
            exchange = cut[cut.find(" ") + 1 :] if " " in cut else cut
        return f"{self._vocabulary} {exchange}".strip()


def answered_exchange(context: LLMContext) -> str | None:
    """The last thing the user said and the bot's reply to it (a greeting alone, before
    anyone spoke); "" while the bot has yet to reply; None before anything was said."""
    user = bot = ""
    for message in reversed(context.get_messages()):
        role = message.get("role") if isinstance(message, dict) else None
        text = standard_message_text(message).strip()
        if role not in ("user", "assistant") or not text:
            continue
        if role == "assistant":
            bot = f"{text} {bot}".strip()  # a reply in several messages (a tool call's two)
        elif not bot:
            return ""  # the bot is answering: words now are spoken over it
        else:
            user = text
            break
    if not (user or bot):
        return None
    return f"{user} {bot}".strip()


def transcribe_prompted(whisper: Any, audio: Any, prompt: str, **options: Any) -> list[Any]:
    """`whisper.transcribe` (a WindowedWhisper) with `prompt` as its previous text, and again
    without it when the words heard repeat a run of the prompt's."""
    segments = list(whisper.transcribe(audio, vocabulary=prompt, **options)[0])
    if prompt and repeats_prompt(" ".join(s.text for s in segments), prompt):
        segments = list(whisper.transcribe(audio, **options)[0])
    return segments


def repeats_prompt(text: str, prompt: str, run: int = REPEATED_RUN) -> bool:
    said, read = _words(text), _words(prompt)
    runs = {tuple(read[i : i + run]) for i in range(len(read) - run + 1)}
    return any(tuple(said[i : i + run]) in runs for i in range(len(said) - run + 1))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())
