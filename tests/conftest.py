"""Shared fixtures: settings isolated from the developer's .env, local models loaded once."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

# What the benches' code writes when tests use it (synthesized voices, logs) goes outside the
# checkout: a cache in the user's cache folder, kept between runs (bench/common.py).
os.environ.setdefault(
    "BENCH_OUT_DIR", str(Path.home() / ".cache" / "voice-agent" / "test-out")
)

from bot.config import Settings  # noqa: E402 (after the output folder is chosen)
from tests.support.audio import SHARED_AUDIO
from tests.support.browser import client_bundle, playwright  # noqa: F401 (fixtures)
from tests.support.cloud import cartesia, deepgram, groq  # noqa: F401 (fixtures: loopback peers)
from tests.support.observability import planted_keys, restore_logging  # noqa: F401 (fixtures)
from tests.support.played_bot import static_site  # noqa: F401 (a fixture)
from tests.support.redis_server import redis_server  # noqa: F401 (a fixture)
from tests.support.server import free_port, serving
from tests.support.settings import KEY_VARIABLES, local_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return local_settings()


@pytest.fixture(scope="session")
def models(settings):
    import asyncio

    from bot.local.models import LocalModels
    from bot.local.warm_up import warm_up_llm

    models = LocalModels(settings)
    models.warm_up()
    asyncio.run(warm_up_llm(settings, models))
    yield models
    models.close()


@pytest.fixture(scope="session")
def speech(models):
    """Synthesize (and cache) a question with the local voice: int16 at 16 kHz."""
    cache: dict[str, np.ndarray] = {}

    def say(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = models.synthesize(text, 16000)
        return cache[text]

    return say


@pytest.fixture
def shared_audio() -> Path:
    if not (SHARED_AUDIO / "transcripts.tsv").exists():
        pytest.skip(f"the shared real recordings are not here ({SHARED_AUDIO}); "
                    "they live beside the repo in CI")
    return SHARED_AUDIO


@pytest.fixture(autouse=True)
def _no_cloud_keys(monkeypatch):
    """Tests choose providers explicitly; keys in the developer's shell must not leak in."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("LOG_LEVEL", "INFO")


@pytest.fixture(scope="session")
def serve_app(models):
    """Start `web.app.create_app(settings, models)` under uvicorn; stopped at session end.
    `providers`: stand-ins for some stages (tests/support/fakes.py), in session processes too."""
    from web.app import create_app

    @contextlib.asynccontextmanager
    async def serve(providers=None, **overrides):
        settings = local_settings(port=free_port(), greeting="", **overrides)
        injected = {}
        if providers is not None:
            command = providers.session_process_command()
            injected = {"providers": providers, "session_process_command": command}
        async with serving(create_app(settings, models, **injected), settings) as server:
            yield server

    return serve


_exit_status = 0


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without finalising the interpreter, once pytest has reported everything.

    The echo canceller's native library (livekit) forwards its logs from its own threads; one
    that calls into Python 3.11 while it finalises is ended with pthread_exit, which aborts
    the whole process from Rust ("panic in a function that cannot unwind", exit 134) after
    every test has passed: seen once in ~20 runs of tests/test_echo.py."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
