"""What a session is doing right now — listening, thinking or speaking — from its frames."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from enum import StrEnum

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    LLMContextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator
from pipecat.processors.frame_processor import FrameDirection


class SessionState(StrEnum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


StateSubscriber = Callable[[SessionState], Awaitable[None] | None]


class SessionStateObserver(BaseObserver):
    """listening → (the LLM is asked) thinking → (bot audio starts) speaking → listening.

    Thinking starts when a context reaches the LLM, not when the user stops speaking: a
    turn with nothing transcribed (a cough, noise) is left unanswered, and a badge that
    went to "thinking" on it would stay there, since no bot audio follows.
    """

    def __init__(self, **kwargs):
        super().__init__(observe_every_push=False, **kwargs)
        self.state = SessionState.LISTENING
        self._subscribers: list[StateSubscriber] = []

    def subscribe(self, callback: StateSubscriber) -> None:
        self._subscribers.append(callback)

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if isinstance(frame, LLMContextFrame):
            # A context on its way to the LLM: down from the user aggregator, or up from
            # the assistant aggregator (a tool's result). The assistant aggregator also
            # sends the context on downstream when a reply ends, which asks nothing. A
            # tool's re-run while the filler still plays stays "speaking".
            # A speculative one (bot/turns/speculation.py) comes while the user may still speak.
            upstream = data.direction == FrameDirection.UPSTREAM
            to_llm = upstream or isinstance(data.source, LLMUserAggregator)
            if to_llm and not frame.speculation and self.state is not SessionState.SPEAKING:
                await self._set(SessionState.THINKING)
            return
        # The speaking frames are broadcast both ways; one direction is enough.
        if data.direction != FrameDirection.UPSTREAM:
            return
        if isinstance(frame, BotStartedSpeakingFrame):
            await self._set(SessionState.SPEAKING)
        elif isinstance(frame, BotStoppedSpeakingFrame) and self.state is SessionState.SPEAKING:
            await self._set(SessionState.LISTENING)
        elif isinstance(frame, UserStartedSpeakingFrame) and self.state is SessionState.THINKING:
            await self._set(SessionState.LISTENING)

    async def _set(self, state: SessionState) -> None:
        if state is self.state:
            return
        self.state = state
        logger.debug(f"Session state: {state.value}")
        for callback in self._subscribers:
            result = callback(state)
            if inspect.isawaitable(result):
                await result
