"""Sentences for the TTS, except that a reply's first one is cut at its first clause.

Piper synthesises a whole chunk before its first sample, so the first audio waits for the
LLM to finish the first sentence and for Piper to speak all of it. Cutting the first
sentence at a clause ("Paris is the capital of France, | and it is known for…") lets
speech start on the clause; the rest follows while the first clause plays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

CLAUSE_PUNCTUATION = ",;:"


class FirstClauseTextAggregator(SimpleTextAggregator):
    def __init__(self, *, min_words: int = 4, **kwargs):
        super().__init__(**kwargs)
        self._min_words = min_words
        self._first = True

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        for char in text:
            self._text += char
            # A clause ends at punctuation followed by a space ("1,000" is not a clause).
            if (
                self._first
                and char.isspace()
                and len(self._text) > 1
                and self._text[-2] in CLAUSE_PUNCTUATION
                and len(self._text.split()) >= self._min_words
            ):
                clause, self._text = self._text.strip(), ""
                self._first = False
                yield Aggregation(text=clause, type=TextType.SENTENCE)
                continue
            result = await self._check_sentence_with_lookahead(char)
            if result:
                self._first = False
                yield result

    async def flush(self) -> Aggregation | None:
        self._first = True  # the next reply starts over
        return await super().flush()

    async def handle_interruption(self):
        self._first = True
        await super().handle_interruption()

    async def reset(self):
        self._first = True
        await super().reset()
