"""Steering one live session from outside its pipeline: instructions, speech, ending.

`run_bot` creates a `SessionControl` per session (as `Session.control`); the admin API
(`web/admin.py`) calls it. Nothing here restarts or rebuilds the pipeline:

- new instructions travel as an `LLMUpdateSettingsFrame` carrying a `system_instruction`
  delta, queued into the session's `PipelineWorker`. It flows downstream in order with every other
  frame, so the LLM applies it before any turn queued after it; `update_instructions`
  returns once the LLM has taken the frame (this object observes the pipeline for that);
- `say` queues a `TTSSpeakFrame`;
- `end` queues an `EndFrame` (a graceful stop) and falls back to cancelling.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import TYPE_CHECKING

from loguru import logger
from pipecat.frames.frames import EndFrame, LLMUpdateSettingsFrame, TTSSpeakFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings

if TYPE_CHECKING:
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext

    from processors.context_budget import ContextBudget


class InstructionMode(StrEnum):
    REPLACE = "replace"  # the new text replaces the session's instructions
    APPEND = "append"  # the new text is added after them


class SessionControl(BaseObserver):
    """The levers on one running session (see the module docstring)."""

    def __init__(
        self,
        *,
        worker: PipelineWorker,
        llm: LLMService,
        context: LLMContext,
        instructions: str,
        budget: ContextBudget | None = None,
    ):
        super().__init__(observe_every_push=False)  # it watches the LLM process frames only
        self._worker = worker
        self._llm = llm
        self.context = context
        self.budget = budget
        # The instructions as set here (the base prompt Pipecat composes addons onto).
        self.instructions = instructions
        self.updates = 0
        self._pending: dict[int, asyncio.Future] = {}

    async def update_instructions(
        self, text: str, mode: InstructionMode = InstructionMode.REPLACE, *, timeout: float = 10.0
    ) -> bool:
        """Set the instructions for the next LLM turn; True once the LLM has taken them.

        False means the update is queued but the pipeline did not reach the LLM within
        `timeout` (e.g. a long answer is still being generated); it still applies, in
        order, before any later turn.
        """
        text = text.strip()
        new = text if mode is InstructionMode.REPLACE else f"{self.instructions}\n\n{text}".strip()
        self.instructions = new
        self.updates += 1
        # Every LLM of the session takes it: with provider fallback the LLM is a switcher
        # over a cloud and a local LLM, and either may answer the next turn.
        frame = LLMUpdateSettingsFrame(
            delta=LLMSettings(system_instruction=new), reach_inactive_services=True
        )
        taken = asyncio.get_running_loop().create_future()
        self._pending[frame.id] = taken
        await self._worker.queue_frame(frame)
        try:
            await asyncio.wait_for(asyncio.shield(taken), timeout)
            return True
        except TimeoutError:
            logger.warning(f"Instructions queued; the LLM has not taken them within {timeout:g} s")
            return False
        finally:
            self._pending.pop(frame.id, None)

    async def say(self, text: str) -> None:
        """Have the bot speak `text` now (after anything it is already saying)."""
        await self._worker.queue_frame(TTSSpeakFrame(text))

    async def end(self, reason: str | None = None) -> None:
        """Ask the session to end gracefully (the host waits for it and may cancel);
        `reason`: what its client is told."""
        await self._worker.queue_frame(EndFrame(reason=reason))

    async def cancel(self) -> None:
        await self._worker.cancel(reason="ended by the admin API")

    def context_summary(self) -> dict:
        messages = self.context.messages
        summary = {"messages": len(messages)}
        if self.budget is not None:
            summary.update(
                estimated_tokens=self.budget.request_tokens(self.context),
                budget_tokens=self.budget.budget_tokens,
                dropped_messages=self.budget.stats.dropped_messages,
            )
        return summary

    # --- BaseObserver -----------------------------------------------------------------

    async def on_process_frame(self, data: FrameProcessed):
        # Taken: the session's LLM (or an LLM inside it, behind a fallback switcher) is
        # processing the frame, so every turn queued after it sees the new instructions.
        if not isinstance(data.frame, LLMUpdateSettingsFrame):
            return
        if data.processor is self._llm or isinstance(data.processor, LLMService):
            taken = self._pending.get(data.frame.id)
            if taken is not None and not taken.done():
                taken.set_result(True)
