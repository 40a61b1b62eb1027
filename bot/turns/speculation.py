"""Answering a turn before it is declared over (SPECULATIVE_REPLY): preemptive generation.

Turn detection waits: for the VAD's stop, for smart-turn's verdict and, when smart-turn
hears an unfinished sentence, for up to SMART_TURN_STOP_SECS more silence. The words of the
turn are usually known before that wait ends — from the eager Whisper pass at the pause
(an `EagerTranscriptionFrame`, bot/local/eager_whisper.py) or from the final transcript of a
segment smart-turn judged unfinished. `SpeculativeTurnStopStrategy` starts the LLM on
those words at once, with Pipecat's own speculation machinery: the user aggregator runs the
inference on a provisional copy of the context, and the LLM service's `SpeculationGate`
holds everything the answer produces. When the turn ends with the same words (normalised:
case, punctuation), the held answer is released at once and the turn is written to the
context without a second inference; if the user speaks again or the words differ, the
speculation is withdrawn (`EagerEndOfTurnCancelFrame`: the gate discards it, the LLM stops)
and the turn is answered as usual. Nothing speculative is heard for a turn that did not end,
and the context only ever holds what was said.

The logic is Pipecat's `EagerUserTurnStopStrategy`, which only serves services that detect
turns themselves; here it sits on smart-turn's `TurnAnalyzerUserTurnStopStrategy`.
"""

from __future__ import annotations

import asyncio

from loguru import logger
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_stop.eager_match_policy import EagerMatchPolicy, NormalizedMatch


class SpeculativeTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart-turn's end of turn, with the answer started on the words heard so far."""

    def __init__(
        self,
        *,
        speculate: bool = True,
        match_policy: EagerMatchPolicy | None = None,
        speculation_timeout: float = 5.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._speculate_enabled = speculate
        self._match_policy = match_policy or NormalizedMatch()
        self._speculation_timeout = speculation_timeout
        self._speculation: UserTurnSpeculation | None = None
        self._speculation_timer: asyncio.Task | None = None
        self._segments: list[str] = []  # this turn's final transcripts so far

    @property
    def heard(self) -> str:
        return " ".join(s.strip() for s in self._segments if s.strip())

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._withdraw("the user spoke again")
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            await self._take_speculation()  # the recogniser withdrew it; its frame goes on
        elif isinstance(frame, EagerTranscriptionFrame):
            await self._speculate_on(" ".join(filter(None, (self.heard, frame.text.strip()))))
        transcript = isinstance(frame, TranscriptionFrame) and bool(frame.text.strip())
        if transcript:
            self._segments.append(frame.text)
        result = await super().process_frame(frame)
        if transcript and self._segments and self._speculation is None:
            # The turn is still open after its transcript (smart-turn heard an unfinished
            # sentence, or has not judged yet): answer these words while it waits.
            await self._speculate_on(self.heard)
        return result

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None):
        speculation = await self._take_speculation()
        if speculation and self._match_policy.matches(speculation.text, self.heard):
            logger.info("Speculative answer confirmed: the turn ended with the words it answers")
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames, confirms_speculation=True
            )
            return
        if speculation:
            logger.info(
                f"Speculative answer withdrawn: it answered [{speculation.text}], "
                f"the turn said [{self.heard}]"
            )
            await self.trigger_user_turn_speculation_cancelled()
        await super().trigger_user_turn_stopped(
            enable_user_speaking_frames=enable_user_speaking_frames
        )

    async def handle_user_turn_started(self):
        await self._withdraw("a new turn started")
        self._segments = []
        await super().handle_user_turn_started()

    async def handle_user_turn_stopped(self):
        # Ended without resolving the speculation (the stop watchdog, an interruption).
        await self._withdraw("the turn ended unresolved")
        self._segments = []
        await super().handle_user_turn_stopped()

    async def cleanup(self):
        await self._take_speculation()
        await super().cleanup()

    async def _speculate_on(self, text: str) -> None:
        if not self._speculate_enabled or not text:
            return
        if self._speculation is not None:
            if self._match_policy.matches(self._speculation.text, text):
                return  # already answering these words
            await self._withdraw("the words changed")
        speculation = self._speculation = UserTurnSpeculation(text=text)
        self._speculation_timer = self.task_manager.create_task(
            self._expire(speculation), f"{self}::speculation_timeout"
        )
        logger.debug(f"{self}: answering [{text}] before the turn ends")
        await self.trigger_user_turn_inference_triggered(speculation=speculation)

    async def _expire(self, speculation: UserTurnSpeculation) -> None:
        """A speculation the turn never resolved would hold its answer forever."""
        await asyncio.sleep(self._speculation_timeout)
        self._speculation_timer = None
        if self._speculation is speculation:
            self._speculation = None
            logger.info("Speculative answer withdrawn: the turn did not end in time")
            await self.trigger_user_turn_speculation_cancelled()

    async def _withdraw(self, why: str) -> None:
        if await self._take_speculation():
            logger.info(f"Speculative answer withdrawn: {why}")
            await self.trigger_user_turn_speculation_cancelled()

    async def _take_speculation(self) -> UserTurnSpeculation | None:
        speculation, self._speculation = self._speculation, None
        if self._speculation_timer:
            timer, self._speculation_timer = self._speculation_timer, None
            await self.task_manager.cancel_task(timer)
        return speculation
