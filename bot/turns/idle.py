"""The bot checks in on a quiet user once, then says goodbye (Pipecat's UserIdleController).

`USER_IDLE_SECS` after the bot last spoke with no word from the user, the bot asks
`USER_IDLE_CHECK_IN` ("Are you still there?"); if `USER_IDLE_END_SECS` more pass in
silence, it says `USER_IDLE_GOODBYE` and ends the session. Anything the user says starts
the count again. USER_IDLE_SECS=0: never.
"""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import EndFrame, TTSSpeakFrame, UserIdleTimeoutUpdateFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator


class IdleCheckIn:
    def __init__(self, *, check_in: str, goodbye: str, end_secs: float, idle_secs: float):
        self._check_in = check_in
        self._goodbye = goodbye
        self._end_secs = end_secs
        self._idle_secs = idle_secs
        self._checked_in = False

    def attach(self, aggregator: LLMUserAggregator, worker: PipelineWorker) -> None:
        @aggregator.event_handler("on_user_turn_idle")
        async def on_user_turn_idle(aggregator):
            if not self._checked_in:
                self._checked_in = True
                logger.info("The user has been quiet: checking in")
                # The second wait (before goodbye) starts once the check-in has been said.
                await worker.queue_frames(
                    [
                        TTSSpeakFrame(self._check_in),
                        UserIdleTimeoutUpdateFrame(timeout=self._end_secs),
                    ]
                )
            else:
                logger.info("The user is still quiet: saying goodbye and ending the session")
                await worker.queue_frames([TTSSpeakFrame(self._goodbye), EndFrame()])

        @aggregator.event_handler("on_user_turn_started")
        async def on_user_turn_started(aggregator, strategy):
            if self._checked_in:
                self._checked_in = False
                await worker.queue_frame(UserIdleTimeoutUpdateFrame(timeout=self._idle_secs))
