"""The session's state badge follows Pipecat's user aggregator through whole turns."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DataFrame,
    EndFrame,
    Frame,
    LLMContextFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.empty_user_turn import EmptyUserTurnConfig
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from bot.pipeline import EMPTY_TURN_PROMPT
from processors.session_state import SessionState, SessionStateObserver

TIMEOUT = 30  # seconds: generous, only a hung pipeline reaches it


class Checkpoint(DataFrame):
    """Sent after a turn: once the observer sees it leave the fake output, it has seen
    everything the pipeline did before it."""


class BotSpeaks(DataFrame):
    """Makes the fake output say something: bot started, then stopped, speaking."""


class FakeOutput(FrameProcessor):
    """The output transport's part in turn taking: it announces the bot's speech both ways,
    and keeps the LLM's contexts (there is no LLM here) for the test to see."""

    def __init__(self):
        super().__init__()
        self.contexts: list[LLMContextFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, BotSpeaks):
            await self.broadcast_frame(BotStartedSpeakingFrame)
            await self.broadcast_frame(BotStoppedSpeakingFrame)
        elif isinstance(frame, LLMContextFrame):
            self.contexts.append(frame)
        else:
            await self.push_frame(frame, direction)


class CheckpointedStateObserver(SessionStateObserver):
    def __init__(self):
        super().__init__()
        self.checkpoints = asyncio.Queue()

    async def on_push_frame(self, data: FramePushed):
        await super().on_push_frame(data)
        if isinstance(data.frame, Checkpoint) and isinstance(data.source, FakeOutput):
            self.checkpoints.put_nowait(self.state)


class Conversation:
    """Pipecat's user aggregator (our empty-turn prompt) → fake output, observed."""

    def __init__(self):
        self.user, _ = LLMContextAggregatorPair(
            LLMContext(),
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    start=[VADUserTurnStartStrategy()],
                    stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.05)],
                ),
                user_turn_stop_timeout=0.2,
                empty_user_turn=EmptyUserTurnConfig(interrupted_prompt=EMPTY_TURN_PROMPT),
            ),
        )
        self.output = FakeOutput()
        self.observer = CheckpointedStateObserver()
        self.states: list[SessionState] = []
        self.observer.subscribe(self.states.append)
        self.turns_stopped: asyncio.Queue[str | None] = asyncio.Queue()
        self.worker = PipelineWorker(Pipeline([self.user, self.output]), observers=[self.observer])

        @self.user.event_handler("on_user_turn_stopped")
        async def on_user_turn_stopped(aggregator, strategy, message):
            self.turns_stopped.put_nowait(message.content)

    async def __aenter__(self):
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self._run = asyncio.create_task(runner.run())
        return self

    async def __aexit__(self, *exc):
        await self.worker.queue_frame(EndFrame())
        await asyncio.wait_for(self._run, TIMEOUT)

    async def bot_speaks(self) -> SessionState:
        await self.worker.queue_frame(BotSpeaks())
        return await self.checkpoint()

    async def user_turn(self, words: str | None) -> tuple[str | None, SessionState]:
        """The user speaks (`words` transcribed, or nothing) and the turn ends."""
        frames: list[Frame] = [VADUserStartedSpeakingFrame()]
        if words:
            frames.append(TranscriptionFrame(words, "user", "", finalized=True))
        await self.worker.queue_frames([*frames, VADUserStoppedSpeakingFrame()])
        content = await asyncio.wait_for(self.turns_stopped.get(), TIMEOUT)
        return content, await self.checkpoint()

    async def checkpoint(self) -> SessionState:
        await self.worker.queue_frame(Checkpoint())
        return await asyncio.wait_for(self.observer.checkpoints.get(), TIMEOUT)


async def test_a_transcribed_turn_is_thinking_until_the_bot_speaks():
    async with Conversation() as talk:
        content, state = await talk.user_turn("What is the capital of France?")
        assert content == "What is the capital of France?"
        assert state is SessionState.THINKING and len(talk.output.contexts) == 1
        assert await talk.bot_speaks() is SessionState.LISTENING
    assert talk.states == [SessionState.THINKING, SessionState.SPEAKING, SessionState.LISTENING]


async def test_an_untranscribed_turn_while_idle_goes_back_to_listening():
    """A cough after the bot finished: nothing to answer, so the badge never says thinking
    (it used to switch on the user's turn end and stay there, no bot audio following)."""
    async with Conversation() as talk:
        await talk.user_turn("Hello.")
        await talk.bot_speaks()
        contexts = len(talk.output.contexts)

        content, state = await talk.user_turn(None)
        assert not content
        assert state is SessionState.LISTENING
        assert len(talk.output.contexts) == contexts  # the LLM was not asked


async def test_an_untranscribed_first_turn_is_answered_so_it_is_thinking():
    """Before the bot first finishes, an empty turn counts as an interruption: Pipecat asks
    the LLM (our prompt: "Sorry, I didn't catch that"), so thinking is right."""
    async with Conversation() as talk:
        content, state = await talk.user_turn(None)
        assert not content
        assert state is SessionState.THINKING
        [context] = talk.output.contexts
        assert context.context.messages[-1]["content"] == EMPTY_TURN_PROMPT
