"""The outside probe's server (issue 14): the real app on loopback with the instant fake
services (tests/support/fakes.py) unless a finding is about a model, so the tests are about
the server; real VAD, turn detection, transports and teardown run throughout."""

from __future__ import annotations

import contextlib

import pytest
from loguru import logger

from tests.support.fakes import FakeProviders
from tests.support.server import free_port, serving
from tests.support.settings import local_settings

LOCAL_SEARCH = {"search_provider": "local"}


@pytest.fixture(scope="module")
def models():
    """Whisper and Piper only (the fake services need nothing; no LLM is started)."""
    from bot.local.models import LocalModels

    models = LocalModels(local_settings(**LOCAL_SEARCH))
    yield models
    models.close()


@pytest.fixture
def serve(models):
    from web.app import create_app

    @contextlib.asynccontextmanager
    async def serve(fake: str = "stt,llm,tts", **overrides):
        settings = local_settings(port=free_port(), **{"greeting": "", **LOCAL_SEARCH, **overrides})
        providers = FakeProviders(fake)
        app = create_app(settings, models, providers=providers,
                         session_process_command=providers.session_process_command())
        async with serving(app, settings) as server:
            yield server

    return serve


@pytest.fixture
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO")
    yield lines
    logger.remove(sink)
