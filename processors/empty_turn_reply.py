"""Answers a barge-in nobody could transcribe with a fixed sentence instead of the LLM.

When the user cuts the bot off and the STT hears no words (a cough, a door), Pipecat's
user aggregator asks the LLM, with a developer message, to ask the user to repeat. The
small local model does not always do as told: under load it took ~19 s and called
web_search ("the latest news about Brightline Telecom") before apologising. The reply
is known in advance, so this processor, right after the user aggregator, takes that
request off the LLM's hands: it removes the developer message and has the TTS say the
sentence (which the assistant aggregator then adds to the context as the bot's words).
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, LLMContextFrame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class EmptyTurnReply(FrameProcessor):
    """Turns the LLM request ending in `prompt` (a developer message) into `reply`, spoken."""

    def __init__(self, *, prompt: str, reply: str, **kwargs):
        super().__init__(**kwargs)
        self._prompt = prompt
        self._reply = reply

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            messages = frame.context.get_messages()
            last = messages[-1] if messages else None
            if isinstance(last, dict) and last.get("role") == "developer" and last.get("content") == self._prompt:
                frame.context.set_messages(messages[:-1])
                await self.push_frame(TTSSpeakFrame(self._reply))
                return
        await self.push_frame(frame, direction)
