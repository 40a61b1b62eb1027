"""Cluster nodes for tests: `python -m bot serve` processes on free loopback ports, every stage
on its cloud provider pointed at the loopback peers (tests/peers/), sharing one Redis.

    async with CloudPeers() as peers, nodes(peers, redis.url, "a", "b") as (a, b):
        a.url, a.ws_url, a.kill(), await a.wait_exit()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.peers import CartesiaPeer, DailyPeer, DeepgramPeer, GroqPeer
from tests.support.polling import until
from tests.support.server import free_port

REPO = Path(__file__).resolve().parents[2]
KEY = "loopback-key"
NODE_READY_SECS = 60  # imports Pipecat and loads the VAD; nothing else is local


class CloudPeers:
    """Deepgram, Groq, Cartesia and Daily's REST API as loopback peers, shared by every node
    of a test. A Daily room's bot cannot join the peer's rooms: it gives up after
    DAILY_JOIN_TIMEOUT_SECS."""

    def __init__(self, reply: str = "Paris, I believe."):
        # What the user "says" is scripted per utterance: `deepgram.script(text)`.
        self.deepgram = DeepgramPeer(api_key=KEY)
        self.groq = GroqPeer(api_key=KEY, default_reply=reply)
        self.cartesia = CartesiaPeer(api_key=KEY)
        self.daily = DailyPeer(api_key=KEY)
        self._all = (self.deepgram, self.groq, self.cartesia, self.daily)

    async def __aenter__(self) -> CloudPeers:
        for peer in self._all:
            await peer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        for peer in self._all:
            await peer.stop()

    def env(self) -> dict[str, str]:
        return {
            "STT_PROVIDER": "cloud", "LLM_PROVIDER": "cloud", "TTS_PROVIDER": "cloud",
            "SEARCH_PROVIDER": "local", "SEARCH_ENABLED": "false",
            "DEEPGRAM_API_KEY": KEY, "GROQ_API_KEY": KEY, "CARTESIA_API_KEY": KEY,
            "DEEPGRAM_BASE_URL": self.deepgram.ws_url,
            "GROQ_BASE_URL": f"{self.groq.base_url}/openai/v1",
            "CARTESIA_BASE_URL": self.cartesia.ws_url,
            "DAILY_API_KEY": KEY, "DAILY_API_URL": self.daily.base_url,
            "DAILY_JOIN_TIMEOUT_SECS": "2",
            # The cloud stack alone: no local model is loaded or fallen back to.
            "FALLBACK_ENABLED": "false", "SMART_TURN_ENABLED": "false",
        }


class Node:
    """One server process; its log is kept in a temporary file, shown when it fails to start."""

    def __init__(self, peers: CloudPeers, redis_url: str | None, node_id: str, **settings):
        self.id = node_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self._dir = tempfile.TemporaryDirectory(prefix=f"node-{node_id}-")
        self.log_path = Path(self._dir.name) / "server.log"
        self.memory_file = Path(self._dir.name) / "user-memory.sqlite3"  # MEMORY_PATH's default
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_URL"))}
        env.update(peers.env())
        env.update({"PYTHONPATH": str(REPO), "NODE_ID": node_id, "GREETING": "",
                    "LOG_LEVEL": "INFO", "CLUSTER_HEARTBEAT_SECS": "0.5", "CLUSTER_TTL_SECS": "2",
                    "CLUSTER_CALL_TIMEOUT_SECS": "5", "USER_IDLE_SECS": "0"})
        if redis_url:
            env["REDIS_URL"] = redis_url
        env.update({k.upper(): str(v) for k, v in settings.items()})
        self.env = env
        self.process: subprocess.Popen | None = None

    async def start(self) -> Node:
        log = open(self.log_path, "wb")
        # cwd: an empty directory, so no developer's .env is read.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self._dir.name, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            await until(self._ready, NODE_READY_SECS, f"node {self.id} to serve", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log()[-4000:]}") from None
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"node {self.id} exited ({self.process.returncode}):\n"
                                 f"{self.log()[-4000:]}")
        try:
            return httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the node dies without a word to anyone."""
        self.process.kill()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float = 20) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout)

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()
            try:
                await self.wait_exit()
            except TimeoutError:
                self.kill()
                await self.wait_exit()
        self._dir.cleanup()


@contextlib.asynccontextmanager
async def nodes(peers: CloudPeers, redis_url: str | None, *ids: str,
                only: dict[str, dict] | None = None, **settings):
    """Several nodes, started together (each loads Pipecat and its VAD on its own);
    `only={node_id: settings}` for one node's own settings."""
    only = only or {}
    started = [Node(peers, redis_url, node_id, **settings, **only.get(node_id, {}))
               for node_id in ids]
    async with contextlib.AsyncExitStack() as stack:
        results = await asyncio.gather(*(n.start() for n in started), return_exceptions=True)
        for node, result in zip(started, results):
            stack.push_async_exit(node.__aexit__)
            if isinstance(result, BaseException):
                raise result
        yield started
