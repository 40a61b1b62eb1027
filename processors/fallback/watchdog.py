"""The first-byte watchdog: Pipecat has none, so a provider that hears but never answers
(a Deepgram with no final, a Groq that hangs, a Cartesia that stays silent) is otherwise
never noticed.

A small processor that sits right after a cloud service (in its switcher branch) and
sees everything it pushes downstream. `expect(key)` starts a request's clock (STT: the
VAD stop; LLM: the context; TTS: the text of a context); the first frame `first_byte`
maps to that key stops it; a clock that runs out raises `on_first_byte_timeout(key)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class FirstByteWatchdog(FrameProcessor):
    def __init__(self, budget_secs: float, first_byte: Callable[[Frame], str | None], **kwargs):
        super().__init__(enable_direct_mode=True, **kwargs)
        self.budget_secs = budget_secs
        self._first_byte = first_byte
        self._clocks: dict[str, asyncio.Task] = {}
        # Sync: the switcher hears of an answer before the answer leaves the branch.
        self._register_event_handler("on_first_byte", sync=True)
        self._register_event_handler("on_first_byte_timeout", sync=True)

    @property
    def waiting(self) -> bool:
        return bool(self._clocks)

    def is_waiting(self, key: str) -> bool:
        return key in self._clocks

    def expect(self, key: str) -> None:
        """Start `key`'s clock, unless it is already running."""
        if key not in self._clocks:
            self._clocks[key] = self.create_task(self._run(key), f"{self}::{key}")

    async def stop(self, *keys: str) -> None:
        """Stop the given clocks (all of them if none is named)."""
        for key in keys or list(self._clocks):
            task = self._clocks.pop(key, None)
            if task is not None and task is not asyncio.current_task():
                await self.cancel_task(task)

    async def _run(self, key: str) -> None:
        try:
            await asyncio.sleep(self.budget_secs)
        finally:
            if self._clocks.get(key) is asyncio.current_task():
                del self._clocks[key]
        await self._call_event_handler("on_first_byte_timeout", key)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            key = self._first_byte(frame)
            if key is not None:
                answered = key in self._clocks
                await self.stop(key)
                await self._call_event_handler("on_first_byte", key, answered)
        await self.push_frame(frame, direction)

    async def cleanup(self):
        await self.stop()
        await super().cleanup()
