"""A whole conversation through run_bot on the cloud stack (its loopback peers); VAD, smart
turn and denoise stay local."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import (
    Frame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSTextFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from bot.providers import ProviderNames
from tests.peers.cartesia import CartesiaPeer
from tests.peers.deepgram import DeepgramPeer
from tests.peers.groq import GroqPeer
from tests.support.audio import rms
from tests.support.cloud import (
    ANSWER,
    CARTESIA_KEY,
    DG_KEY,
    GROQ_KEY,
    OUT_RATE,
    UTTERANCE,
    cloud_settings,
)


class ByServiceType(BaseObserver):
    """Frames the cloud services pushed (first push), for a pipeline built by run_bot."""

    def __init__(self):
        super().__init__()
        self.pushed: list[tuple[str, Frame]] = []

    async def on_push_frame(self, data: FramePushed):
        kind = type(data.source).__name__
        services = ("DeepgramSTT", "GroqLLM", "CartesiaTTS")
        if data.first_push and kind in services:
            self.pushed.append((kind, data.frame))

    def texts(self, service: str, frame_type: type) -> list[str]:
        return [f.text for k, f in self.pushed if k == service and type(f) is frame_type]


@dataclass
class CloudConversation:
    result: Any
    spy: ByServiceType
    deepgram: DeepgramPeer
    groq: GroqPeer
    cartesia: CartesiaPeer
    question: np.ndarray
    models: Any


@pytest.fixture(scope="module")
async def cloud_conversation():
    """One real conversation through run_bot with STT, LLM and TTS on their peers.

    The question is real speech (the local Piper voice, the only local model loaded for
    it); VAD, smart turn and denoise are the real local ones.
    """
    from bot.conversation import converse
    from bot.local.models import LocalModels
    from bot.session import Session
    from transports.file import FileTransportParams, Utterance

    async with (
        DeepgramPeer(api_key=DG_KEY) as dg,
        GroqPeer(api_key=GROQ_KEY, token_delay=0.01) as groq,
        CartesiaPeer(api_key=CARTESIA_KEY) as cartesia,
    ):
        dg.script(UTTERANCE)
        groq.reply_text(ANSWER)
        settings = cloud_settings(deepgram=dg, groq=groq, cartesia=cartesia)
        names = ProviderNames.from_settings(settings)
        assert names == ProviderNames("deepgram", "groq", "cartesia")
        models = LocalModels(settings)
        question = models.synthesize(UTTERANCE, sample_rate=settings.input_sample_rate)
        spy = ByServiceType()
        session = Session(settings=settings, models=models, observers=[spy])
        result = await asyncio.wait_for(
            converse([Utterance(question)], session, FileTransportParams(fast=True)),
            timeout=120,
        )
        yield CloudConversation(result, spy, dg, groq, cartesia, question, models)


@pytest.mark.slow
async def test_whole_conversation_on_the_cloud_stack(cloud_conversation):
    c = cloud_conversation
    (record,) = c.result.turn_dicts()
    assert record["user_text"] == UTTERANCE
    assert not record["interrupted"]

    # Each stage went to its peer: the transcript became the LLM's question, the LLM's
    # answer became Cartesia's text, Cartesia's words and audio came out.
    (conn,) = c.deepgram.connections
    assert conn.audio_bytes >= len(c.question) * 2 and conn.results(final=True)
    assert " ".join(c.spy.texts("DeepgramSTT", TranscriptionFrame)) == UTTERANCE
    assert c.groq.completions[0]["messages"][-1] == {"role": "user", "content": UTTERANCE}
    assert "".join(c.spy.texts("GroqLLM", LLMTextFrame)) == ANSWER
    assert [ctx.text.strip() for ctx in c.cartesia.contexts.values()] == [ANSWER]
    assert " ".join(c.spy.texts("CartesiaTTS", TTSTextFrame)) == ANSWER

    # The bot's audio is Cartesia's (peer) tone, played out: not silence.
    bot_audio = bytes(c.result.transport.bot_audio)
    assert len(bot_audio) / 2 / OUT_RATE >= c.cartesia.secs_per_char * len(ANSWER) * 0.8
    assert rms(bot_audio) > 1000
    # No local model but the question's voice was loaded.
    assert c.models._whisper is None and c.models._llm is None


@pytest.mark.slow
async def test_whole_conversation_turn_record_has_the_bot_text(cloud_conversation):
    (record,) = cloud_conversation.result.turn_dicts()
    assert record["bot_text"] == ANSWER
    assert {"llm_ttft", "tts_ttfb", "voice_to_voice"} <= set(record["stages_ms"]), record
