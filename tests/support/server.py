"""The real FastAPI app served by uvicorn on a free loopback port, in the test's loop, and
a question asked over its /ws; waiting for a server subprocess to answer HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable

from bot.config import Settings
from bot.processes import free_port  # noqa: F401 (the tests' servers take their port here)
from tests.support.polling import until_sync
from web.ws_client import AgentClient


class LiveServer:
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


def wait_until_answering(process: subprocess.Popen, url: str, timeout: float, what: str,
                         tail: Callable[[], str]) -> None:
    """Block until `url` answers HTTP at all (any status): `process`, a server, is up. Fails the
    test with `tail()` (its log) if the process exits first or `timeout` s pass."""
    import httpx

    def answering() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"{what} exited ({process.returncode}) before answering {url}:\n{tail()}")
        try:
            httpx.get(url, timeout=1)
        except httpx.HTTPError:
            return False
        return True

    until_sync(answering, timeout, f"{what} to answer {url}", interval=0.3, details=tail)


def turn_count(n: int):
    """A `silence_until` condition: the client has received `n` turns."""
    return lambda received: len(received.turns) >= n


async def ask(client: AgentClient, audio, turns_before: int, timeout: float = 60) -> dict:
    """Speak `audio`, then silence until its turn arrives; that turn."""
    await client.speak(audio)
    assert await client.silence_until(turn_count(turns_before + 1), timeout), client.received.turns
    return client.received.turns[turns_before]
