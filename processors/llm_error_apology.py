"""Says an apology when the LLM fails a turn, so the caller is never left in silence.

A failed completion (the local llama.cpp server gone, a 500, a refused connection) makes
Pipecat's LLM service push an `ErrorFrame` upstream and end the response with no words:
the turn would simply go quiet. Placed just before the LLM, this processor sees that
error on its way up and has the TTS say `apology` (which the assistant aggregator then
adds to the context as the bot's words). A cloud LLM with fallback does not need it: the
fallback switcher answers with the local LLM, or apologises itself (processors/fallback/).
"""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class LLMErrorApology(FrameProcessor):
    """On an error from `llm`, pushes the error on and `apology` downstream to be spoken."""

    def __init__(self, llm: FrameProcessor, *, apology: str, **kwargs):
        super().__init__(**kwargs)
        self._llm = llm
        self._apology = apology

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if (
            isinstance(frame, ErrorFrame)
            and direction == FrameDirection.UPSTREAM
            and frame.processor is self._llm
        ):
            logger.warning(f"The LLM failed the turn ({frame.error}); saying the apology")
            await self.push_frame(TTSSpeakFrame(self._apology))
