"""Running run_bot's own pipeline (`build_pipeline`) in a test, turns given as frames, and
what came out of it."""

from __future__ import annotations

from pipecat.frames.frames import Frame, LLMTextFrame
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import BaseTransport


class NoTransport(BaseTransport):
    """Turns come in as frames at the pipeline's top, and nothing is played."""

    def __init__(self):
        super().__init__()
        self._input, self._output = IdentityFilter(), IdentityFilter()

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output


class Heard(FrameProcessor):
    """Every frame that came this far downstream, in order (after the LLM: what the caller
    would hear)."""

    def __init__(self):
        super().__init__()
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)

    def texts(self) -> list[str]:
        return [f.text for f in self.frames if isinstance(f, LLMTextFrame)]

    def index(self, kind: type) -> list[int]:
        return [i for i, f in enumerate(self.frames) if isinstance(f, kind)]
