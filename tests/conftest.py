"""Shared fixtures: settings isolated from the developer's .env, local models loaded once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from bot.config import Settings

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
KEY_VARIABLES = ("DEEPGRAM_API_KEY", "GROQ_API_KEY", "CARTESIA_API_KEY", "TAVILY_API_KEY", "DAILY_API_KEY")


def local_settings(**overrides) -> Settings:
    """Settings for the offline stack, whatever the environment or .env say."""
    return Settings(_env_file=None, **{"stt_provider": "local", "llm_provider": "local",
                                       "tts_provider": "local", "search_provider": "local", **overrides})


@pytest.fixture(scope="session")
def settings() -> Settings:
    return local_settings()


@pytest.fixture(scope="session")
def models(settings):
    from bot.local_models import LocalModels

    import asyncio

    from bot.pipeline import warm_up_llm

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
        pytest.skip(f"the shared real recordings are not here ({SHARED_AUDIO}); they live beside the repo in CI")
    return SHARED_AUDIO


def shared_transcripts() -> list[tuple[str, str]]:
    tsv = SHARED_AUDIO / "transcripts.tsv"
    if not tsv.exists():
        return []
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:] if line.strip()]
    return [(r[0], r[1]) for r in rows]


@pytest.fixture(autouse=True)
def _no_cloud_keys(monkeypatch):
    """Tests choose providers explicitly; keys in the developer's shell must not leak in."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("LOG_LEVEL", "INFO")


class LiveServer:
    """The real FastAPI app served by uvicorn on a free loopback port, in the test loop."""

    def __init__(self, app, port: int):
        self.app, self.port = app, port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    @property
    def registry(self):
        return self.app.state.registry


@contextlib.asynccontextmanager
async def serving(app, settings: Settings):
    """Serve `app` under uvicorn as `python -m bot serve` does, on `settings.port`."""
    import uvicorn

    from web.http_server import server_config

    server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield LiveServer(app, settings.port)
    finally:
        server.should_exit = True
        await task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def serve_app(models):
    """Start `web.app.create_app(settings, models)` under uvicorn; stopped at session end."""
    from web.app import create_app

    @contextlib.asynccontextmanager
    async def serve(**overrides):
        settings = local_settings(port=free_port(), greeting="", **overrides)
        async with serving(create_app(settings, models), settings) as server:
            yield server

    return serve
