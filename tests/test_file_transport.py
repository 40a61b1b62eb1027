"""The file transport's script: it waits for the bot's whole answer, not its first silence,
and speaks an utterance given a time (`at`) at that time, the first one too.

An LLM on a heavily loaded machine can stop writing for seconds mid-answer; once its TTS has
had nothing to say for 3 s (Pipecat's `stop_frame_timeout_s`) the bot counts as stopped. A
person waits for the rest; the scripted user must too, or a conversation test on a busy
machine turns into a barge-in test.
"""

from __future__ import annotations

import asyncio

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport

from bench import voices
from bot.conversation import converse
from bot.session import Session
from tests.support.fakes import FakeProviders, InstantLLMService
from tests.support.settings import local_settings
from transports.file import FileTransportParams, Utterance

pytestmark = pytest.mark.slow

ANSWER = "The first half of the answer is here. And the second half comes after a pause."
# Where the LLM stops writing: after the next sentence's first word, which tells the TTS that
# the first sentence is whole, so the bot says it and falls silent.
PAUSED_AT = ANSWER.index(" the second")
WRITING_PAUSE_SECS = 5.0  # the TTS's 3 s, then more than the script's reply pause (1 s)


class PausingLLMService(InstantLLMService):
    """Writes a sentence and a word, stops writing for a while, then writes the rest."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if not isinstance(frame, LLMContextFrame):
            await super().process_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(LLMTextFrame(ANSWER[:PAUSED_AT]))
        await asyncio.sleep(WRITING_PAUSE_SECS)
        await self.push_frame(LLMTextFrame(ANSWER[PAUSED_AT:]))
        await self.push_frame(LLMFullResponseEndFrame())


class Timeline(BaseObserver):
    """When the user started speaking and when an answer finished playing, in order."""

    def __init__(self):
        super().__init__()
        self.events: list[str] = []
        self.user_started_secs: list[float] = []  # on the pipeline's clock

    async def on_push_frame(self, data: FramePushed):
        # Counted once: the turn's start is broadcast both ways, as two frames.
        if isinstance(data.frame, UserStartedSpeakingFrame) and data.first_push and (
            data.direction == FrameDirection.DOWNSTREAM
        ):
            self.events.append("user speaks")
            self.user_started_secs.append(data.timestamp / 1e9)
        elif isinstance(data.frame, LLMFullResponseEndFrame) and isinstance(
            data.source, BaseOutputTransport
        ):
            self.events.append("answer played")


class PausingLLM(FakeProviders):
    def llm(self, settings, models):
        return PausingLLMService()


async def test_the_next_utterance_waits_for_the_rest_of_a_paused_answer(models):
    if not voices.get("flite-slt").available():
        pytest.skip("flite-slt needs flite (apt-get install flite; `make test` installs it)")
    question = voices.synthesize("Tell me about the two halves.", "flite-slt")
    script = [Utterance(audio=question, name="first"), Utterance(audio=question, name="second")]
    timeline = Timeline()
    session = Session(settings=local_settings(greeting=""), models=models,
                      providers=PausingLLM("stt,tts"), observers=[timeline])
    result = await converse(script, session, FileTransportParams(reply_pause_secs=1.0))

    assert timeline.events == ["user speaks", "answer played"] * 2, timeline.events
    turns = result.turn_dicts()
    assert [(t["bot_text"], t["interrupted"]) for t in turns] == [(ANSWER, False)] * 2, turns


async def test_the_first_utterance_is_spoken_at_its_time(models):
    if not voices.get("flite-slt").available():
        pytest.skip("flite-slt needs flite (apt-get install flite; `make test` installs it)")
    question = voices.synthesize("Tell me about the two halves.", "flite-slt")
    timeline = Timeline()
    session = Session(settings=local_settings(greeting=""), models=models,
                      providers=FakeProviders("stt,llm,tts"), observers=[timeline])
    await converse([Utterance(audio=question, at=2.0)], session,
                   FileTransportParams(lead_in_secs=0.3, fast=False))

    # Not at the end of the lead-in: at 2 s (its turn starts when the VAD has heard it).
    assert len(timeline.user_started_secs) == 1, timeline.events
    assert timeline.user_started_secs[0] >= 2.0, timeline.user_started_secs


async def test_after_a_backchannel_the_script_waits_for_the_answer_it_was_said_over(models):
    """An utterance the bot is not to answer (`reply_expected=False`): the conversation ends
    once the answer it was said over has been played, not when something new is said (here
    the idle check-in, 3 s after it)."""
    if not voices.get("flite-slt").available():
        pytest.skip("flite-slt needs flite (apt-get install flite; `make test` installs it)")
    script = [
        Utterance(audio=voices.synthesize("Tell me about the two halves.", "flite-slt")),
        Utterance(audio=voices.synthesize("Okay.", "flite-slt"), after_bot_audio=1.0,
                  reply_expected=False),
    ]
    settings = local_settings(greeting="", user_idle_secs=3.0)
    session = Session(
        settings=settings, models=models, providers=FakeProviders("llm", answer=ANSWER)
    )
    result = await converse(script, session, FileTransportParams(reply_pause_secs=1.0))

    assert result.transport.playback.bot_starts == 1, result.turn_dicts()
    assert [t["bot_text"] for t in result.turn_dicts()] == [ANSWER]
