"""What each switcher branch holds around its service, and how a cloud service is muted.

Pipecat's `ServiceSwitcher` gates each branch with a filter on either side; ours also
puts a `_Tap` on either side of the service, so the switcher sees what a member pushes
without touching the member (and the cloud branch holds the first-byte watchdog).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pipecat.frames.frames import CancelFrame, EndFrame, ErrorFrame, Frame, StartFrame
from pipecat.pipeline.service_switcher import ServiceSwitcherStrategyFailover
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

LIFECYCLE = (StartFrame, EndFrame, CancelFrame)


class Muteable:
    """Mixin for a cloud service: while `muted`, what it pushes (errors aside) is dropped
    at the source, before any observer counts it."""

    muted = False

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if self.muted and not isinstance(frame, (ErrorFrame, *LIFECYCLE)):
            return
        await super().push_frame(frame, direction)


class Failover(ServiceSwitcherStrategyFailover):
    async def switch_to(self, service: FrameProcessor) -> bool:
        return await self._set_active_if_available(service) is not None


class Tap(FrameProcessor):
    """Sees what its service pushes in one direction (`out`) and hands it to the switcher."""

    def __init__(self, on_output: Callable[[Frame, FrameDirection], Awaitable[bool]], out):
        super().__init__(enable_direct_mode=True)
        self._on_output = on_output
        self._out = out

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction is self._out and not await self._on_output(frame, direction):
            return
        await self.push_frame(frame, direction)
