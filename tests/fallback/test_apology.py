"""The local counterpart fails too: a spoken apology, never silence."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.config import Settings
from tests.fallback.harness import (
    DG_HEARD,
    EVIDENT_TO_SPEECH_SECS,
    GROQ_SAID,
    Outcome,
)
from tests.peers import Fault, GroqPeer

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------
# The local counterpart fails too: a spoken apology, never silence
# --------------------------------------------------------------------------------------

APOLOGY = Settings(_env_file=None).fallback_apology


class BrokenModel:
    """A local model that fails on use (Whisper's transcribe, Piper's synthesize)."""

    config = SimpleNamespace(sample_rate=22050)

    def transcribe(self, *args, **kwargs):
        raise RuntimeError("the local model is broken")

    def synthesize(self, *args, **kwargs):
        raise RuntimeError("the local model is broken")


def models_with(models, *, whisper=None, piper=None, local_llm_url=None):
    """The session's loaded models, with one local model replaced (for this test only)."""
    from bot.local.models import LocalModels
    from tests.support.settings import local_settings

    copy = LocalModels(
        local_settings(**({"local_llm_url": local_llm_url} if local_llm_url else {})))
    copy._whisper = whisper or models._whisper
    copy._piper = piper or models._piper
    copy._silero, copy._smart_turn = models._silero, models._smart_turn
    copy._llm = None if local_llm_url else models._llm
    return copy


def assert_apologised(o: Outcome, stage: str) -> None:
    (at, event), = o.watch.of("apology")
    assert event.stage == stage, o.watch.events
    fallback_at = o.watch.of("fallback")[0][0]
    # Never silence: something is heard within 2 s of the fault, and after the local
    # failure the apology itself is spoken (by Cartesia: every TTS input is recorded).
    spoke_at = o.watch.first_speech_after(o.watch.evident(fallback_at))
    assert (spoke_at is not None
            and spoke_at - o.watch.evident(fallback_at) <= EVIDENT_TO_SPEECH_SECS)
    spoken = [c.text.strip() for c in o.peers.cartesia.contexts.values() if c.chunks_sent]
    assert APOLOGY in spoken, spoken
    assert o.watch.first_speech_after(at) is not None
    line = next((m for m in o.logs if "apologising" in m.record["message"]), None)
    assert line is not None and line.record["extra"].get("session_id") == o.session_id


async def test_whisper_failing_too_means_an_apology(converse_with, models, peers):
    peers.deepgram.faults.inject(Fault.HANG, times=1)
    o = await converse_with(
        "stt", fast=False, local_models=models_with(models, whisper=BrokenModel()),
        user_turn_stop_timeout=3.0
    )
    assert_apologised(o, "stt")
    assert o.turns[-1]["user_text"] == DG_HEARD  # and Deepgram is back for the next question


async def test_local_llm_failing_too_means_an_apology(converse_with, models, peers):
    async with GroqPeer(api_key=None, check_models=False) as broken_local:
        # The local server answers the warm-up, then fails every answer.
        broken_local.faults.inject(Fault.SLOW_FIRST_BYTE, seconds=0.0, times=1)
        broken_local.faults.inject(Fault.HTTP_500)
        peers.groq.faults.inject(Fault.HTTP_500, times=1)
        local = models_with(models, local_llm_url=f"{broken_local.base_url}/v1")
        o = await converse_with("llm", local_models=local)
    assert_apologised(o, "llm")
    assert len(broken_local.completions) >= 2  # the warm-up, then the failed answer
    assert o.turns[-1]["bot_text"] == GROQ_SAID  # and Groq is back for the next question


async def test_piper_failing_too_means_an_apology_through_cartesia(converse_with, models, peers):
    peers.cartesia.faults.inject(Fault.HANG, times=1)
    o = await converse_with("tts", local_models=models_with(models, piper=BrokenModel()))
    assert_apologised(o, "tts")
    assert o.watch.tts_audio.get("SharedPiperTTSService", 0) == 0
    # The unspoken answer is closed after the apology: the next question is asked and
    # answered at once (before, the client waited a minute on an answer that never ended).
    assert len(o.turns) == 2 and o.turns[-1]["bot_text"] == GROQ_SAID, o.turns


