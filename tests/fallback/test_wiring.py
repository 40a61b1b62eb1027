"""Which stages get a fallback, and nothing loads until it is needed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bot.config import Settings
from tests.fallback.harness import (
    CARTESIA_KEY,
    DG_KEY,
    GROQ_KEY,
)

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------
# Wiring: which stages get a fallback, and nothing loads until it is needed
# --------------------------------------------------------------------------------------


class Untouchable:
    """LocalModels' place: anything fetched from it fails the test."""

    def __init__(self):
        self.touched: list[str] = []

    def __getattr__(self, name):
        self.touched.append(name)
        raise AssertionError(f"LocalModels.{name} fetched while building the services")


def cloud_only(**overrides) -> Settings:
    values: dict[str, Any] = dict(
        _env_file=None, stt_provider="cloud", llm_provider="cloud", tts_provider="cloud",
        deepgram_api_key=DG_KEY, groq_api_key=GROQ_KEY, cartesia_api_key=CARTESIA_KEY,
        deepgram_base_url="ws://127.0.0.1:9", groq_base_url="http://127.0.0.1:9/v1",
        cartesia_base_url="ws://127.0.0.1:9",
    )
    return Settings(**{**values, **overrides})


def test_cloud_stages_get_a_local_fallback_built_without_loading_a_model():
    from bot.cloud_services import CartesiaTTS, DeepgramSTT, GroqLLM
    from bot.local.piper_tts import SharedPiperTTSService
    from bot.local.whisper_stt import SharedWhisperSTTService
    from bot.providers import LocalLLMService, create_llm, create_stt, create_tts
    from processors.fallback import LLMFallback, STTFallback, TTSFallback

    models = Untouchable()
    settings = cloud_only()
    stt, llm, tts = (create(settings, models) for create in (create_stt, create_llm, create_tts))
    assert not models.touched
    assert isinstance(stt, STTFallback) and type(stt.cloud) is DeepgramSTT
    assert type(stt.local) is SharedWhisperSTTService  # plain: it transcribes replays whole
    assert isinstance(llm, LLMFallback) and type(llm.cloud) is GroqLLM
    assert type(llm.local) is LocalLLMService
    assert llm.settings.system_instruction == settings.system_prompt
    assert isinstance(tts, TTSFallback) and type(tts.cloud) is CartesiaTTS
    assert type(tts.local) is SharedPiperTTSService


def test_no_fallback_when_disabled_local_or_without_local_models():
    from bot.cloud_services import DeepgramSTT, GroqLLM
    from bot.local.piper_tts import SharedPiperTTSService
    from bot.providers import create_llm, create_stt, create_tts

    assert type(create_stt(cloud_only(fallback_enabled=False), Untouchable())) is DeepgramSTT
    assert type(create_llm(cloud_only(), None)) is GroqLLM  # no local stack to fall back on
    piper = SimpleNamespace(piper=object())
    assert type(create_tts(cloud_only(tts_provider="local"), piper)) is SharedPiperTTSService


async def test_instructions_addressed_to_the_llm_switcher_reach_both_llms():
    from pipecat.frames.frames import LLMUpdateSettingsFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.services.settings import LLMSettings
    from pipecat.tests.utils import run_test

    from bot.providers import create_llm

    llm = create_llm(cloud_only(fallback_warm=False), Untouchable())
    frame = LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction="Be brief."), service=llm)
    await run_test(Pipeline([llm]), frames_to_send=[frame], expected_down_frames=None)
    assert llm.cloud.settings.system_instruction == "Be brief."
    assert llm.local.settings.system_instruction == "Be brief."


def test_backoff_doubles_up_to_its_cap():
    from processors.fallback import FallbackPolicy

    policy = FallbackPolicy(budget_secs=1.0, retry_secs=30.0, retry_max_secs=100.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [30.0, 60.0, 100.0, 100.0]


@pytest.mark.parametrize(
    "before, after, joined",
    [
        ("What is the capital", "capital of France?", "of France?"),
        ("What is the capital", "Capital of France.", "of France."),
        ("How many months are", "months are there in a year?", "there in a year?"),
        ("What is the capital", "of France?", "of France?"),  # nothing heard twice
        ("It is very", "very cold today.", "cold today."),
        ("", "Hello there.", "Hello there."),
    ],
)
def test_the_words_a_tail_shares_with_the_cloud_finals_are_said_once(before, after, joined):
    from processors.fallback.stt import without_overlap

    assert without_overlap(before, after) == joined
