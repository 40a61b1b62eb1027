"""Answers a barge-in nobody could transcribe with a fixed sentence instead of the LLM.

When the user cuts the bot off and the STT hears no words (a cough, a door), Pipecat's
user aggregator asks the LLM, with a developer message, to ask the user to repeat. The
small local model does not always do as told: under load it took ~19 s and called
web_search ("the latest news about Brightline Telecom") before apologising. The reply
is known in advance, so this processor, right after the user aggregator, takes that
request off the LLM's hands: it removes the developer message and answers with the
sentence as the LLM's reply would come (a response's start, its text, its end), so the TTS
says it, the assistant aggregator adds it to the context, and the client (Pipecat's eval
harness included) sees a reply to the barge-in rather than stray speech.
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


class EmptyTurnReply(FrameProcessor):
    """Answers the LLM request ending in `prompt` (a developer message) with `reply`."""

    def __init__(self, *, prompt: str, reply: str, **kwargs):
        super().__init__(**kwargs)
        self._prompt = prompt
        self._reply = reply

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            messages = frame.context.get_messages()
            last = messages[-1] if messages else None
            asked = isinstance(last, dict) and last.get("role") == "developer"
            if asked and last.get("content") == self._prompt:
                frame.context.set_messages(messages[:-1])
                await self.push_frame(LLMFullResponseStartFrame())
                await self.push_frame(LLMTextFrame(self._reply))
                await self.push_frame(LLMFullResponseEndFrame())
                return
        await self.push_frame(frame, direction)
