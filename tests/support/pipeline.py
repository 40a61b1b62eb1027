"""Running run_bot's own pipeline (`build_pipeline`) in a test, turns given as frames."""

from __future__ import annotations

from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameProcessor
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
