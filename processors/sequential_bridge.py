"""The non-streaming LLM→TTS bridge: the whole reply first, then one TTS request for it.

The production pipeline streams: the TTS speaks each sentence as soon as the LLM has
written it. This processor, inserted between the LLM and the TTS when
`STREAMING_BRIDGE=false`, turns that into the naive sequential design the streaming one is
measured against (`bench/voice_to_voice.py`): it holds every spoken `LLMTextFrame` of a
response until the response's `LLMFullResponseEndFrame`, then hands the TTS the whole text
as one aggregated frame (one synthesis request), followed by the end frame.

Every other frame passes through unchanged and in order. An interruption, a new response
or the end of the pipeline drops whatever text is held, so an interrupted answer is never
spoken late.
"""

from __future__ import annotations

from pipecat.frames.frames import (
    AggregatedTextFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.text.base_text_aggregator import TextType


class SequentialBridge(FrameProcessor):
    """Buffers a response's LLM text and releases it whole at the response's end."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._held: list[str] = []

    @property
    def held_text(self) -> str:
        return "".join(self._held)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, LLMTextFrame) and not frame.skip_tts:
            self._held.append(frame.text)
            return
        if isinstance(frame, LLMFullResponseEndFrame):
            text = self.held_text
            self._held.clear()
            if text.strip():
                await self.push_frame(AggregatedTextFrame(text, TextType.SENTENCE))
        elif isinstance(
            frame, (InterruptionFrame, LLMFullResponseStartFrame, EndFrame, CancelFrame)
        ):
            self._held.clear()
        await self.push_frame(frame, direction)
