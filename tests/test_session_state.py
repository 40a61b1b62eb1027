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
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
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

from bot.pipeline import EMPTY_TURN_PROMPT, EMPTY_TURN_REPLY
from processors.empty_turn_reply import EmptyTurnReply
from processors.session_state import SessionState, SessionStateObserver

TIMEOUT = 30  # seconds: generous, only a hung pipeline reaches it


class Checkpoint(DataFrame):
    """Sent after a step: once the observer sees the tail push it on, it has seen every
    frame the pipeline pushed before it."""


class BotSpeaks(DataFrame):
    """Makes the fake LLM and output answer: the reply's text and the bot's speech."""


class FakeLLMAndOutput(FrameProcessor):
    """Keeps the contexts sent to the LLM; on `BotSpeaks`, streams a reply and announces
    the bot's speech both ways, as the LLM, the TTS and the output transport would."""

    def __init__(self):
        super().__init__()
        self.contexts: list[LLMContextFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.contexts.append(frame)
        elif isinstance(frame, BotSpeaks):
            await self.broadcast_frame(BotStartedSpeakingFrame)
            for reply in (LLMFullResponseStartFrame(), LLMTextFrame("Paris."), LLMFullResponseEndFrame()):
                await self.push_frame(reply)
            await self.broadcast_frame(BotStoppedSpeakingFrame)
        else:
            await self.push_frame(frame, direction)


class Tail(FrameProcessor):
    """The pipeline's end: keeps what the assistant aggregator sends on, and pushes each
    checkpoint on as a frame of its own (the state observer sees first pushes only)."""

    def __init__(self):
        super().__init__()
        self.contexts: list[LLMContextFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.contexts.append(frame)
        await self.push_frame(Checkpoint() if isinstance(frame, Checkpoint) else frame, direction)


class CheckpointedStateObserver(SessionStateObserver):
    def __init__(self):
        super().__init__()
        self.checkpoints = asyncio.Queue()

    async def on_push_frame(self, data: FramePushed):
        await super().on_push_frame(data)
        if isinstance(data.frame, Checkpoint) and isinstance(data.source, Tail):
            self.checkpoints.put_nowait(self.state)


class Conversation:
    """Pipecat's aggregators (our empty-turn prompt) around a fake LLM and output, observed."""

    def __init__(self, *processors: FrameProcessor):
        """`processors` go between the user aggregator and the LLM, as in the pipeline."""
        self.context = LLMContext()
        self.user, self.assistant = LLMContextAggregatorPair(
            self.context,
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    start=[VADUserTurnStartStrategy()],
                    stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.05)],
                ),
                user_turn_stop_timeout=0.2,
                empty_user_turn=EmptyUserTurnConfig(interrupted_prompt=EMPTY_TURN_PROMPT),
            ),
        )
        self.llm = FakeLLMAndOutput()
        self.tail = Tail()
        self.observer = CheckpointedStateObserver()
        self.states: list[SessionState] = []
        self.observer.subscribe(self.states.append)
        self.turns_stopped: asyncio.Queue[str | None] = asyncio.Queue()
        self.worker = PipelineWorker(
            Pipeline([self.user, *processors, self.llm, self.assistant, self.tail]),
            observers=[self.observer],
        )

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
        assert state is SessionState.THINKING and len(talk.llm.contexts) == 1
        # The assistant aggregator sends the finished reply's context on downstream: that
        # asks the LLM nothing, so the bot is listening.
        assert await talk.bot_speaks() is SessionState.LISTENING
        assert talk.tail.contexts
    assert talk.states == [SessionState.THINKING, SessionState.SPEAKING, SessionState.LISTENING]


async def test_an_untranscribed_turn_while_idle_goes_back_to_listening():
    """A cough after the bot finished: nothing to answer, so the badge never says thinking
    (it used to switch on the user's turn end and stay there, no bot audio following)."""
    async with Conversation() as talk:
        await talk.user_turn("Hello.")
        await talk.bot_speaks()
        contexts = len(talk.llm.contexts)

        content, state = await talk.user_turn(None)
        assert not content
        assert state is SessionState.LISTENING
        assert len(talk.llm.contexts) == contexts  # the LLM was not asked


async def test_an_untranscribed_first_turn_is_answered_so_it_is_thinking():
    """Before the bot first finishes, an empty turn counts as an interruption: Pipecat asks
    the LLM (our prompt: "Sorry, I didn't catch that"), so thinking is right."""
    async with Conversation() as talk:
        content, state = await talk.user_turn(None)
        assert not content
        assert state is SessionState.THINKING
        [context] = talk.llm.contexts
        assert context.context.messages[-1]["content"] == EMPTY_TURN_PROMPT


async def test_with_our_reply_the_untranscribed_first_turn_never_reaches_the_llm():
    async with Conversation(EmptyTurnReply(prompt=EMPTY_TURN_PROMPT, reply=EMPTY_TURN_REPLY)) as talk:
        content, _ = await talk.user_turn(None)
        assert not content
        assert talk.llm.contexts == []
        assert talk.context.get_messages()[-1] == {"role": "assistant", "content": EMPTY_TURN_REPLY}
