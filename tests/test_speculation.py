"""Speculative answers (SPECULATIVE_REPLY, bot/turns/speculation.py), checked frame by frame.

The production stop strategy (`SentenceTurnStop`, which carries the speculation) runs in a
real Pipecat user aggregator, then run_bot's own reply chain (`bot.pipeline.reply_chain`:
the context budget, the local LLM's notes, Pipecat's real `SpeculationGate` inside the LLM
service), and an assistant aggregator writing the context. Two stand-ins make the turns
exact: the turn analyzer (smart-turn's verdicts, scripted) and the model (it answers every
request with the words it was asked, so a stale answer is recognisable wherever it turns up).
"""

from __future__ import annotations

import asyncio

import pytest
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, BaseTurnParams, EndOfTurnState
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext, standard_message_text
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

from bot.config import Settings
from bot.pipeline import create_memory, reply_chain
from bot.providers import create_knowledge
from bot.turns.turn_end import SentenceTurnStop
from tests.support.fakes import unset_llm_settings
from tests.support.pipeline import Heard
from tests.support.polling import until

WAIT = 10.0  # bounds a hung test only


class ScriptedTurnAnalyzer(BaseTurnAnalyzer):
    """Smart-turn's verdicts at each VAD stop, in order; `silence_timeout()` is its
    SMART_TURN_STOP_SECS of silence running out (the next audio frame ends the turn)."""

    def __init__(self, verdicts: list[EndOfTurnState]):
        super().__init__(sample_rate=16000)
        self._verdicts = list(verdicts)
        self._timed_out = False

    def silence_timeout(self) -> None:
        self._timed_out = True

    @property
    def speech_triggered(self) -> bool:
        return False

    @property
    def params(self) -> BaseTurnParams:
        return BaseTurnParams()

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        return EndOfTurnState.COMPLETE if self._timed_out else EndOfTurnState.INCOMPLETE

    async def analyze_end_of_turn(self):
        return (self._verdicts.pop(0) if self._verdicts else EndOfTurnState.COMPLETE), None

    def clear(self):
        pass


class EchoLLM(LLMService):
    """Answers each request with the user's last words; counts what it was asked."""

    def __init__(self):
        super().__init__(settings=unset_llm_settings())
        self.requests: list[tuple[bool, str]] = []  # (speculative, words)
        self.answered = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            # The question is the message's last line (notes for it come first).
            words = standard_message_text(frame.context.messages[-1]).splitlines()[-1]
            self.requests.append((frame.speculation, words))
            await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(LLMTextFrame(f"You asked: {words}"))
            await self.push_frame(LLMFullResponseEndFrame())
            self.answered.set()
        else:
            await self.push_frame(frame, direction)


class Conversation:
    def __init__(self, verdicts: list[EndOfTurnState], speculate: bool = True):
        self.context = LLMContext()
        self.llm, self.heard = EchoLLM(), Heard()
        self.analyzer = ScriptedTurnAnalyzer(verdicts)
        stop = SentenceTurnStop(turn_analyzer=self.analyzer, speculate=speculate)
        settings = Settings(_env_file=None)
        # As build_pipeline makes them for a local LLM: its notes (knowledge base,
        # calculator) and the context's budget.
        _, notes = create_knowledge(settings, local_llm=True)
        budget, assistant_params = create_memory(
            settings, self.context, lambda: self.llm.settings.system_instruction
        )
        user, assistant = LLMContextAggregatorPair(
            self.context,
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    start=[VADUserTurnStartStrategy()], stop=[stop]
                )
            ),
            assistant_params=assistant_params,
        )
        # Between the aggregators, run_bot's own chain around the LLM (TTS and audio aside).
        chain = reply_chain(settings, self.llm, budget=budget, notes=notes)
        self.worker = PipelineWorker(
            Pipeline([user, *chain, self.heard, assistant]), params=PipelineParams()
        )

    async def __aenter__(self):
        self._run = asyncio.create_task(WorkerRunner(handle_sigint=False).run(self.worker))
        return self

    async def __aexit__(self, *exc):
        await self.worker.cancel()
        await asyncio.wait_for(self._run, WAIT)

    async def say(self, *frames: Frame):
        await self.worker.queue_frames(list(frames))

    async def until(self, predicate, what: str):
        return await until(predicate, WAIT, what, interval=0.01)


def words(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "user", time_now_iso8601())


def speech_started() -> VADUserStartedSpeakingFrame:
    return VADUserStartedSpeakingFrame(start_secs=0.2)


def speech_stopped() -> VADUserStoppedSpeakingFrame:
    return VADUserStoppedSpeakingFrame(stop_secs=0.2)


INCOMPLETE, COMPLETE = EndOfTurnState.INCOMPLETE, EndOfTurnState.COMPLETE


async def test_an_answer_to_words_the_user_went_on_from_is_never_heard():
    async with Conversation([INCOMPLETE, COMPLETE]) as c:
        # A pause after "What is the capital of": words and sound say unfinished, so the
        # turn waits, and the answer to those words is started meanwhile.
        await c.say(speech_started(), speech_stopped(), words("What is the capital of"))
        await c.until(lambda: c.llm.requests, "speculative request")
        await c.llm.answered.wait()  # its whole answer is written, and held
        assert c.llm.requests == [(True, "What is the capital of")]
        assert c.heard.texts() == []
        # The user goes on: the speculation is withdrawn, the answer never released.
        await c.say(speech_started())
        await c.until(lambda: c.heard.index(EagerEndOfTurnCancelFrame), "withdrawal")
        await c.say(speech_stopped(), words("France?"))
        await c.until(lambda: c.heard.texts(), "the answer")
        await c.until(lambda: len(c.context.messages) == 2, "the answer in the context")

    assert c.llm.requests[-1] == (False, "What is the capital of France?")
    # Frame by frame: the only words that got past the LLM answer the whole question,
    # after the turn ended.
    assert c.heard.texts() == ["You asked: What is the capital of France?"]
    assert c.heard.index(UserStoppedSpeakingFrame)[0] < c.heard.index(LLMTextFrame)[0]
    assert len(c.heard.index(LLMFullResponseStartFrame)) == 1
    # The context holds what was said, and the answer that was heard.
    assert c.context.messages == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "You asked: What is the capital of France?"},
    ]


async def test_a_turn_that_ends_with_the_speculated_words_is_answered_from_the_speculation():
    # Smart-turn hears it unfinished ("… and"), then its silence timeout ends the turn. The
    # request carries a note (the calculator's), so it is a copy of the context: still held.
    async with Conversation([INCOMPLETE]) as c:
        await c.say(speech_started(), speech_stopped(), words("What is twelve times eight, and"))
        await c.until(lambda: c.llm.requests, "speculative request")
        await c.llm.answered.wait()
        assert c.heard.texts() == []  # held while the turn might go on
        # Nothing more: smart-turn's silence timeout is what ends the turn.
        c.analyzer.silence_timeout()
        await c.say(InputAudioRawFrame(bytes(640), 16000, 1))
        await c.until(lambda: c.heard.texts(), "the released answer")
        await c.until(lambda: len(c.context.messages) == 2, "the answer in the context")

    # One inference only: the turn's end released the one already written.
    assert c.llm.requests == [(True, "What is twelve times eight, and")]
    assert c.heard.texts() == ["You asked: What is twelve times eight, and"]
    assert c.heard.index(UserStoppedSpeakingFrame)[0] < c.heard.index(LLMTextFrame)[0]
    assert [m["role"] for m in c.context.messages] == ["user", "assistant"]


async def test_an_interruption_during_speculation_drops_the_held_answer():
    async with Conversation([INCOMPLETE, COMPLETE]) as c:
        await c.say(speech_started(), speech_stopped(), words("Tell me a story about"))
        await c.until(lambda: c.llm.requests, "speculative request")
        await c.llm.answered.wait()
        await c.worker.queue_frame(InterruptionFrame())
        await c.until(lambda: c.heard.index(InterruptionFrame), "the interruption")
        await c.say(speech_started(), speech_stopped(), words("a dragon."))
        await c.until(lambda: len(c.context.messages) == 2, "the answer in the context")

    assert all("You asked: Tell me a story about" != t for t in c.heard.texts())
    assert c.context.messages[0]["content"] == "Tell me a story about a dragon."


async def test_without_speculation_nothing_is_asked_before_the_turn_ends():
    async with Conversation([INCOMPLETE, COMPLETE], speculate=False) as c:
        await c.say(speech_started(), speech_stopped(), words("What is the capital of"))
        await c.say(speech_started(), speech_stopped(), words("France?"))
        await c.until(lambda: c.heard.texts(), "the answer")
    assert c.llm.requests == [(False, "What is the capital of France?")]


def test_the_llms_turn_verdict_and_a_speculative_reply_are_not_both_on():
    from pydantic import ValidationError

    from bot.config import Settings

    with pytest.raises(ValidationError, match="turn one of them off"):
        Settings(_env_file=None, speculative_reply=True, llm_turn_completion=True)
    assert Settings(_env_file=None, llm_turn_completion=True).llm_turn_completion
