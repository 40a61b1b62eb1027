"""Sentences for the TTS, except that a reply's first one goes early, cut at a phrase.

Piper synthesises a whole chunk before its first sample, so the first audio waits for the
LLM to finish the first chunk and for Piper to speak all of it. A reply's first sentence
is therefore cut early (TTS_FIRST_CHUNK):

- `clause`: at its first clause punctuation ("Paris is the capital of France, | and…");
- `phrase` (default): there too, or before the first word that opens a phrase
  ("The capital of Japan | is Tokyo.", "The sky is blue | because…"), or after
  MAX_PHRASE_WORDS words; the rest follows while the first chunk plays;
- `sentence`: not at all (Pipecat's plain sentence aggregation).

A chunk cut without punctuation is synthesised with a trailing comma (see
`speakable_chunk`), so Piper gives it a continuing, not a final, intonation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, BaseTextAggregator, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from bot.config import FirstChunk

CLAUSE_PUNCTUATION = ",;:"
SENTENCE_PUNCTUATION = ".!?"
# Words that open a phrase: a cut before one falls where a speaker could pause.
PHRASE_OPENERS = frozenset(
    "is are was were has have had will would can could should does did "
    "and but or so because since although though while when where which who whose that "
    "in on at of for with by from to into about after before during than like as if".split()
)
MIN_PHRASE_WORDS = 3
MAX_PHRASE_WORDS = 8


def speakable_chunk(text: str) -> str:
    """The text Piper speaks for a chunk: a phrase cut mid-sentence gets a comma."""
    stripped = text.rstrip()
    if stripped and stripped[-1].isalnum():
        return stripped + ","
    return text


class FirstChunkTextAggregator(BaseTextAggregator):
    """Pipecat's sentence aggregator, with a reply's first chunk cut early.

    Every character goes to a `SimpleTextAggregator` (sentences, with its look-ahead for
    "Dr." and "3.5"); until the first chunk is out, the reply's text is also kept here, and
    at a cut the inner aggregator is reset and given what follows the cut."""

    def __init__(
        self, *, first_chunk: FirstChunk = FirstChunk.PHRASE, min_words: int = 4, **kwargs
    ):
        super().__init__(**kwargs)
        self._sentences = SimpleTextAggregator(**kwargs)
        self._first_chunk = FirstChunk(first_chunk)
        self._min_words = min_words
        self._head = ""  # the reply so far, while its first chunk is not out
        self._first = self._first_chunk != FirstChunk.SENTENCE

    @property
    def text(self) -> Aggregation:
        return self._sentences.text

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        for char in text:
            async for sentence in self._sentences.aggregate(char):
                self._first, self._head = False, ""
                yield sentence
            if not self._first:
                continue
            self._head += char
            if char.isspace() and (cut := self._early_cut()):
                chunk, rest = cut
                self._first, self._head = False, ""
                await self._sentences.reset()
                async for sentence in self._sentences.aggregate(rest):
                    yield sentence  # not reached: the rest ends no sentence
                yield Aggregation(text=chunk, type=TextType.SENTENCE)

    def _early_cut(self) -> tuple[str, str] | None:
        """(first chunk, the rest) if the chunk can end at the space just added."""
        words = self._head.split()
        # A clause ends at punctuation followed by a space ("1,000" is not a clause).
        if (
            len(self._head) > 1
            and self._head[-2] in CLAUSE_PUNCTUATION
            and len(words) >= self._min_words
        ):
            return self._head.strip(), ""
        if (
            self._first_chunk != FirstChunk.PHRASE
            or not words
            or words[-1][-1] in SENTENCE_PUNCTUATION
        ):
            return None
        opener = words[-1].lower() in PHRASE_OPENERS and len(words) - 1 >= MIN_PHRASE_WORDS
        if opener:  # cut before the opener, which starts the rest
            head = self._head.rstrip()
            cut = head.rfind(words[-1])
            return head[:cut].strip(), head[cut:] + " "
        if len(words) >= MAX_PHRASE_WORDS:
            return self._head.strip(), ""
        return None

    def _start_over(self) -> None:
        self._head = ""
        self._first = self._first_chunk != FirstChunk.SENTENCE

    async def flush(self) -> Aggregation | None:
        self._start_over()  # the next reply starts over
        return await self._sentences.flush()

    async def handle_interruption(self):
        self._start_over()
        await self._sentences.handle_interruption()

    async def reset(self):
        self._start_over()
        await self._sentences.reset()
