"""Notes for the turn that needs them, and for no other: knowledge-base passages, sums.

Sits just before a local LLM. A small model cannot use tools (it calls a search tool for
greetings and arithmetic, then ignores what comes back), and it guesses at facts and sums
it is unsure of; it answers well from notes handed to it with the question. So each
`NoteSource` looks at the user's turn: the knowledge base gives the passages a question
about it matches (`KnowledgeBase.retrieve`, over KNOWLEDGE_MATCH_THRESHOLD), the calculator
the results of the arithmetic it asks for (bot/tools/calculator.py). A turn none of them has
anything for goes to the LLM untouched: it sees no knowledge-base text at all.

The notes go into a copy of the context made for this one request (as Pipecat's own
speculative inference does): the conversation keeps only what the user said, so a later
turn never inherits them, and the budget guard before this processor trims the real context.
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger
from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext, standard_message_text
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.tools.calculator import worked_arithmetic
from bot.tools.knowledge import KnowledgeBase, format_passages

NOTES_INTRO = (
    "Notes for my question (use them only if they answer it; never mention them otherwise):"
)

# The notes a source has for a question, or "" for none.
NoteSource = Callable[[str], str]


def knowledge_notes(knowledge: KnowledgeBase, threshold: float, max_chars: int) -> NoteSource:
    def notes(question: str) -> str:
        return format_passages(knowledge.retrieve(question, threshold), max_chars)

    return notes


def calculator_notes(question: str) -> str:
    worked = worked_arithmetic(question)
    return "\n".join(f"- Calculator: {line}" for line in worked.splitlines())


def augmented_context(context: LLMContext, sources: list[NoteSource]) -> LLMContext | None:
    """A copy of `context` whose last user message carries the notes the sources have for
    it, or None when they have none."""
    messages = list(context.messages)
    index = next(
        (
            i
            for i in range(len(messages) - 1, -1, -1)
            if isinstance(messages[i], dict) and messages[i].get("role") == "user"
        ),
        None,
    )
    if index is None:
        return None
    question = standard_message_text(messages[index])
    notes = [n for n in (source(question) for source in sources) if n]
    if not notes:
        return None
    logger.debug(f"Notes for {question!r}: {notes}")
    messages[index] = {"role": "user", "content": "\n".join([NOTES_INTRO, *notes, "", question])}
    return LLMContext(messages=messages, tools=context.tools, tool_choice=context.tool_choice)


class TurnNotes(FrameProcessor):
    """Adds the notes its sources have for a user turn to that turn's LLM request."""

    def __init__(self, sources: list[NoteSource], **kwargs):
        super().__init__(**kwargs)
        self._sources = sources

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction is FrameDirection.DOWNSTREAM:
            context = augmented_context(frame.context, self._sources)
            if context is not None:
                frame = LLMContextFrame(context=context, speculation=frame.speculation)
        await self.push_frame(frame, direction)
