"""Answers a turn nobody could make out with a fixed sentence instead of the LLM.

When the user cuts the bot off and the STT hears no words (a cough, a door), Pipecat's
user aggregator asks the LLM, with a developer message, to ask the user to repeat. The
small local model does not always do as told: under load it took ~19 s and called
web_search ("the latest news about Brightline Telecom") before apologising. The reply
is known in advance, so this processor, right after the user aggregator, takes that
request off the LLM's hands: it removes the developer message and answers with the
sentence as the LLM's reply would come (a response's start, its text, its end), so the TTS
says it, the assistant aggregator adds it to the context, and the client (Pipecat's eval
harness included) sees a reply to the barge-in rather than stray speech.

A turn made only of words the recogniser was unsure of gets the same sentence, and its
misheard words leave the context (processors/unsure_transcripts.py says when).
"""

from __future__ import annotations

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.unsure_transcripts import UnsureTranscripts


class EmptyTurnReply(FrameProcessor):
    """Answers with `reply` the LLM request ending in `prompt` (a developer message), and
    the user turn `unsure` says to ask again."""

    def __init__(
        self, *, prompt: str, reply: str, unsure: UnsureTranscripts | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self._prompt = prompt
        self._reply = reply
        self._unsure = unsure

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            messages = frame.context.get_messages()
            last = messages[-1] if messages else None
            role = last.get("role") if isinstance(last, dict) else None
            not_understood = role == "developer" and last.get("content") == self._prompt
            if role == "user" and self._unsure and not frame.speculation:
                not_understood = self._unsure.take_turn()
            if not_understood:
                frame.context.set_messages(messages[:-1])
                await self.push_frame(LLMFullResponseStartFrame())
                await self.push_frame(LLMTextFrame(self._reply))
                await self.push_frame(LLMFullResponseEndFrame())
                return
        await self.push_frame(frame, direction)
