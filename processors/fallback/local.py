"""The local counterpart's side of a fallback: getting it ready, the hold phrase while it
is slow, and the apology when it fails too."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import InterruptionFrame, TTSSpeakFrame

from processors.fallback.frames import ServiceFallbackFrame


class LocalCounterpart:
    """Mixin of `FallbackSwitcher` (which holds the state it reads)."""

    def _start_prepare(self) -> asyncio.Future:
        if self._prepare_task is None:
            self._prepare_task = asyncio.ensure_future(asyncio.to_thread(self._prepare_local))
            self._prepare_task.add_done_callback(log_task_failure)
        return self._prepare_task

    async def _local_ready(self) -> bool:
        if not self._prepare_local:
            return True
        task = self._start_prepare()
        try:
            await asyncio.wait_for(asyncio.shield(task), self._policy.local_timeout_secs)
            return True
        except Exception as e:  # noqa: BLE001 - whatever failed, the apology answers
            logger.error(f"{self.stage.upper()}: the local {self._local} is not ready: {e!r}")
            return False

    def _local_output(self) -> None:
        """The local service produced the first output of the redone turn (the hold phrase
        still waits for speech: an LLM's first token is not audio yet)."""
        if not self._local_answered:
            self._local_answered = True
            self.create_task(self._disarm("local"), f"{self}::answered")

    def _hold_wanted(self, replay: Any) -> bool:
        return True

    async def _hold(self) -> None:
        # Only the caller's ears count: an LLM's first token is not speech yet.
        heard = self._bot_speaking or self._bot_starts > self._starts_at_fault
        if not heard and not self._ending:
            logger.info(
                f"{self.stage.upper()}: nothing said yet from {self._local}; saying the hold phrase"
            )
            await self.push_frame(TTSSpeakFrame(self._policy.hold_phrase, append_to_context=False))

    async def _local_failed(self, why: str) -> None:
        """The local counterpart failed too: apologise rather than leave silence."""
        if self._local_answered or self._ending:
            return
        self._local_answered = True
        await self._disarm("hold", "local")
        if time.monotonic() - self._apologized_at < self._policy.local_timeout_secs:
            # The apology itself failed (no TTS works at all): never loop on it.
            logger.error(
                f"{self.stage.upper()}: {self._local} failed too ({why}); already apologised"
            )
            return
        self._apologized_at = time.monotonic()
        logger.error(f"{self.stage.upper()}: {self._local} failed too ({why}); apologising")
        await self.push_frame(
            ServiceFallbackFrame(
                stage=self.stage,
                event="apology",
                reason="local-failed",
                from_service=self._local.name,
                detail=why[:200],
            )
        )
        await self._apologize()

    async def _apologize(self) -> None:
        await self._inject(self._local, InterruptionFrame())
        await self.push_frame(TTSSpeakFrame(self._policy.apology, append_to_context=False))


def log_task_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning(f"Fallback background task failed: {task.exception()!r}")
