"""The session's state badge follows run_bot's pipeline (`build_pipeline`) through whole turns.

The turns come in as frames (the VAD's and the recogniser's); a held LLM answers when the
test says the bot speaks, as the LLM, the TTS and the output transport would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DataFrame,
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
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import STTService
from pipecat.workers.runner import WorkerRunner

from bot.local.models import LocalModels
from bot.pipeline import build_pipeline
from bot.providers import Services
from bot.turns.turn_taking import EMPTY_TURN_REPLY
from processors.observers.session_state import SessionState, SessionStateObserver
from tests.support.fakes import InstantTTSService, unset_llm_settings
from tests.support.pipeline import NoTransport
from tests.support.settings import local_settings

TIMEOUT = 30  # seconds: generous, only a hung pipeline reaches it


class Checkpoint(DataFrame):
    """Sent after a step: once the observer sees the tail push it on, it has seen every
    frame the pipeline pushed before it."""


class BotSpeaks(DataFrame):
    """Makes the held LLM answer and the bot speak."""


class NoWordsSTT(STTService):
    """The recogniser's transcripts are the test's frames: it hears nothing itself."""

    def __init__(self):
        super().__init__(settings=STTSettings(model=None, language=None))

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        return
        yield


class HeldLLM(LLMService):
    """Keeps the contexts it is asked; on `BotSpeaks`, streams a reply and announces the
    bot's speech both ways, as the TTS and the output transport would."""

    def __init__(self):
        super().__init__(settings=unset_llm_settings())
        self.contexts: list[LLMContextFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.contexts.append(frame)
        elif isinstance(frame, BotSpeaks):
            await self.broadcast_frame(BotStartedSpeakingFrame)
            reply = (LLMFullResponseStartFrame(), LLMTextFrame("Paris."), LLMFullResponseEndFrame())
            for frame in reply:
                await self.push_frame(frame)
            await self.broadcast_frame(BotStoppedSpeakingFrame)
        else:
            await self.push_frame(frame, direction)


class Tail(FrameProcessor):
    """After run_bot's pipeline: keeps what the assistant aggregator sends on, and pushes
    each checkpoint on as a frame of its own (the state observer sees first pushes only)."""

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


@pytest.fixture(scope="module")
def analyzers():
    """Local models for the VAD only (loaded on first use, small)."""
    models = LocalModels(local_settings())
    yield models
    models.close()


class Conversation:
    """run_bot's pipeline around the held LLM, observed."""

    def __init__(self, models: LocalModels):
        # Transcripts come as frames: no recogniser answers each segment (WHISPER_EAGER).
        settings = local_settings(
            smart_turn_enabled=False, user_turn_stop_timeout=0.2, whisper_eager=False,
            echo_tail_secs=0.0,  # no echo of the bot to allow for: it has no voice here
        )
        self.llm = HeldLLM()
        voice = InstantTTSService(secs_per_char=0)
        services = Services(stt=NoWordsSTT(), llm=self.llm, tts=voice)
        built = build_pipeline(settings, services, NoTransport(), models)
        self.user, self.context = built.user_aggregator, built.context
        self.tail = Tail()
        self.observer = CheckpointedStateObserver()
        self.states: list[SessionState] = []
        self.observer.subscribe(self.states.append)
        self.turns_stopped: asyncio.Queue[str | None] = asyncio.Queue()
        self.worker = PipelineWorker(
            Pipeline([built.pipeline, self.tail]), observers=[self.observer]
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
        await self.worker.cancel()
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


async def test_a_transcribed_turn_is_thinking_until_the_bot_speaks(analyzers):
    async with Conversation(analyzers) as talk:
        content, state = await talk.user_turn("What is the capital of France?")
        assert content == "What is the capital of France?"
        assert state is SessionState.THINKING and len(talk.llm.contexts) == 1
        # The assistant aggregator sends the finished reply's context on downstream: that
        # asks the LLM nothing, so the bot is listening.
        assert await talk.bot_speaks() is SessionState.LISTENING
        assert talk.tail.contexts
    assert talk.states == [SessionState.THINKING, SessionState.SPEAKING, SessionState.LISTENING]


async def test_an_untranscribed_turn_while_idle_goes_back_to_listening(analyzers):
    """A cough after the bot finished: nothing to answer, so the badge never says thinking
    (it used to switch on the user's turn end and stay there, no bot audio following)."""
    async with Conversation(analyzers) as talk:
        await talk.user_turn("Hello.")
        await talk.bot_speaks()
        contexts = len(talk.llm.contexts)

        content, state = await talk.user_turn(None)
        assert not content
        assert state is SessionState.LISTENING
        assert len(talk.llm.contexts) == contexts  # the LLM was not asked


async def test_an_untranscribed_first_turn_gets_our_reply_and_never_reaches_the_llm(analyzers):
    """Before the bot first finishes, an empty turn counts as an interruption, which Pipecat
    would answer by asking the LLM; EmptyTurnReply says "Sorry, I didn't catch that" itself."""
    async with Conversation(analyzers) as talk:
        content, state = await talk.user_turn(None)
        assert not content
        assert talk.llm.contexts == []
        assert talk.context.get_messages()[-1] == {"role": "assistant", "content": EMPTY_TURN_REPLY}
        assert state is SessionState.THINKING  # until the bot speaks the reply
