"""Provider selection: which services our factory (bot.providers) builds from the settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.config import Settings, Stage
from bot.providers import ProviderNames, create_llm, create_stt, create_tts, uses_cloud
from tests.support.cloud import (
    CARTESIA_KEY,
    DG_KEY,
    GROQ_KEY,
    NoLocalModels,
)


class StubModels:
    """LocalModels' interface, loading nothing: records which model a factory asked for."""

    def __init__(self):
        self.touched: list[str] = []

    @property
    def whisper(self):
        self.touched.append("whisper")
        return object()

    @property
    def piper(self):
        self.touched.append("piper")
        return object()

    @property
    def llm_server(self):
        from types import SimpleNamespace

        self.touched.append("llm_server")
        return SimpleNamespace(base_url="http://127.0.0.1:9/v1", model_name="stub-local-model")


def test_no_keys_selects_the_local_services():
    from bot.local.eager_whisper import EagerWhisperSTTService
    from bot.local.piper_tts import SharedPiperTTSService
    from bot.providers import LocalLLMService

    settings = Settings(
        _env_file=None,
        stt_provider="auto",
        llm_provider="auto",
        tts_provider="auto",
        deepgram_api_key=None,
        groq_api_key=None,
        cartesia_api_key=None,
        tavily_api_key=None,
    )
    assert ProviderNames.from_settings(settings) == ProviderNames("whisper", "llama.cpp", "piper")
    assert not any(uses_cloud(settings, stage) for stage in Stage)
    models = StubModels()
    stt, llm, tts = (f(settings, models) for f in (create_stt, create_llm, create_tts))
    assert type(stt) is EagerWhisperSTTService  # whisper_eager is on by default
    assert type(llm) is LocalLLMService
    assert type(tts) is SharedPiperTTSService
    assert models.touched == ["whisper", "llm_server", "piper"]


def test_keys_and_loopback_urls_select_the_cloud_services():
    from bot.cloud_services import CartesiaTTS, DeepgramSTT, GroqLLM

    settings = Settings(
        _env_file=None,
        deepgram_api_key=DG_KEY,
        groq_api_key=GROQ_KEY,
        cartesia_api_key=CARTESIA_KEY,
        deepgram_base_url="ws://127.0.0.1:1111",
        groq_base_url="http://127.0.0.1:2222/openai/v1",
        cartesia_base_url="ws://127.0.0.1:3333/",
        fallback_enabled=False,  # the bare wiring (tests/fallback/: with fallback)
    )
    assert ProviderNames.from_settings(settings) == ProviderNames("deepgram", "groq", "cartesia")
    models = NoLocalModels()  # cloud services must not load any local model
    stt, llm, tts = (f(settings, models) for f in (create_stt, create_llm, create_tts))
    assert type(stt) is DeepgramSTT
    assert type(llm) is GroqLLM
    assert type(tts) is CartesiaTTS
    # The base URLs reach the clients, insecure schemes kept for loopback.
    assert stt._client._client_wrapper.get_environment().production == "ws://127.0.0.1:1111"
    assert str(llm._client.base_url) == "http://127.0.0.1:2222/openai/v1/"
    assert tts._url == "ws://127.0.0.1:3333/tts/websocket"


def test_speech_on_cartesia_runs_without_piper_installed():
    """The README's promise: piper-tts (GPL-3.0) can be left out of a bundle that speaks
    through Cartesia. The server and pipeline modules load and the TTS is built with any
    import of `piper` failing, as it would where the package is not installed."""
    script = """
import sys
sys.modules["piper"] = None  # `import piper` raises ImportError
import web.app, bot.pipeline
from bot.config import Settings
from bot.providers import create_tts
settings = Settings(_env_file=None, tts_provider="cloud", cartesia_api_key="k",
                    fallback_enabled=False)
print(type(create_tts(settings, None)).__name__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("CartesiaTTS"), done.stdout


def test_forcing_cloud_without_a_key_is_a_configuration_error():
    settings = Settings(_env_file=None, stt_provider="cloud", deepgram_api_key=None)
    with pytest.raises(ValueError, match="STT_PROVIDER=cloud needs its API key"):
        create_stt(settings, NoLocalModels())

