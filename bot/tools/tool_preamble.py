"""Text an LLM writes before a tool call is the bot's preamble: no filler on top of it."""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    FunctionCallsStartedFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection

_DOWN = FrameDirection.DOWNSTREAM


class NoFillerAfterPreamble:
    """Mixin for an LLM service: when the model already said something before calling a
    tool ("Let me check that."), the tool's filler ("Let me look that up.", pushed by the
    handler through the LLM, `append_to_context=False`) is not said on top of it."""

    _said = False  # the response in progress has text
    _preamble = False  # ...and then called a tool: its filler is not wanted

    async def push_frame(self, frame: Frame, direction: FrameDirection = _DOWN):
        if direction is _DOWN:
            if isinstance(frame, LLMFullResponseStartFrame):
                self._said = self._preamble = False
            elif isinstance(frame, LLMTextFrame) and frame.text.strip():
                self._said = True
            elif isinstance(frame, FunctionCallsStartedFrame):
                self._preamble = self._said
            elif (
                isinstance(frame, TTSSpeakFrame) and not frame.append_to_context and self._preamble
            ):
                self._preamble = False
                logger.debug(f"{self}: the model spoke before its tool call; no filler")
                return
        await super().push_frame(frame, direction)
