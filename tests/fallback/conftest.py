"""Provider fallback (processors/fallback/): every injected cloud fault ends in speech.

Each test holds a real conversation through `run_bot` (file transport, fast mode) with
every stage on its cloud provider, the providers being the loopback peers of
`tests/peers/` with one fault injected. The question is real speech (the local Piper
voice); VAD, turn taking, and the local counterparts (Whisper, the llama.cpp server,
Piper) are the real ones, shared through the session `models` fixture.

Two questions per conversation. For the first, the fault: the conversation must still
produce a spoken answer (bot audio that is not silence, a turn record with the bot's
text), the switch is logged with the session id, counted in Prometheus and in the turn
record, and the first bot audio comes within 2 s of the fault becoming evident (the
switch), measured on the pipeline clock. For the second, asked after the back-off
(shortened here), the stage is on its cloud provider again: the peer answers it.

Peers are scripted with answers no local model would produce, so who answered is
visible in the transcript: Deepgram "hears" `DG_HEARD`, Groq answers `GROQ_SAID`,
Cartesia speaks a 330 Hz tone rather than a voice.

Nothing sleeps and hopes: conversations end when the script has been answered (bounded
by the transport's answer timeout), and every timing read is an event time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from loguru import logger

from tests.fallback.harness import (
    CARTESIA_KEY,
    DG_HEARD,
    DG_KEY,
    GROQ_KEY,
    GROQ_SAID,
    QUESTION,
    SECOND,
    Outcome,
    Peers,
    Watch,
    fallback_settings,
    gated_transport,
)
from tests.peers import CartesiaPeer, DeepgramPeer, GroqPeer


@pytest.fixture
async def peers():
    async with (
        DeepgramPeer(api_key=DG_KEY) as deepgram,
        GroqPeer(api_key=GROQ_KEY, default_reply=GROQ_SAID) as groq,
        CartesiaPeer(api_key=CARTESIA_KEY) as cartesia,
    ):
        deepgram.script(*[DG_HEARD] * 6)
        yield Peers(deepgram, groq, cartesia)



@pytest.fixture
def converse_with(models, speech, peers):
    """Run a two-question conversation on the cloud stack; returns an `Outcome`."""
    from bot.pipeline import run_bot
    from bot.session import Session
    from processors.observers.provider_errors import ProviderErrorObserver
    from transports.file import FileTransportParams, Utterance
    from web.observability import Metrics

    async def run(stage: str, *, local_models=None, questions=(QUESTION, SECOND), fast=True,
                  **overrides) -> Outcome:
        settings = fallback_settings(peers, stage, **overrides)
        watch = Watch()
        metrics = Metrics()
        transport = gated_transport(
            [Utterance(speech(q)) for q in questions],
            FileTransportParams(fast=fast, reply_pause_secs=1.5, answer_timeout_secs=60.0),
        )
        session = Session(
            settings=settings,
            models=local_models or models,
            transport_kind="file",
            observers=[watch, ProviderErrorObserver(metrics.errors, None, metrics.fallbacks)],
            on_turn=[transport.turns.append],
        )
        logs: list[Any] = []
        words = ("fallback", "trying", "apologis")
        sink = logger.add(logs.append, level="INFO",
                          filter=lambda r: any(w in r["message"].lower() for w in words))
        try:
            await asyncio.wait_for(run_bot(transport, session), timeout=180)
        finally:
            logger.remove(sink)
        return Outcome(
            turns=[t.to_dict() for t in sorted(transport.turns, key=lambda t: t.turn)],
            watch=watch,
            peers=peers,
            logs=logs,
            fallbacks_metric=metrics.exposition().decode(),
            session_id=session.id,
            bot_audio=bytes(transport.bot_audio),
        )

    return run
