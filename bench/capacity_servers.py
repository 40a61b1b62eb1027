"""What the capacity bench measures: one server process, or several on this machine (one per
core, `--nodes`) sharing a private Redis in cluster mode, each session placed on the
least-loaded one by `POST /api/connect` as a client of the cluster would be.

CPU and RSS are those of every server, its session processes (SESSION_PROCESSES) and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from bench.common import process_tree, tree_rss_mb
from bench.server import FAKE_ALL, Server


class ServedSystem:
    def __init__(self, nodes: int, env: dict[str, str], answer: str | None = None):
        self.nodes = nodes
        self.env = env
        self.answer = answer  # what the fake LLM says (None: its own short fixed answer)
        self.servers: list[Server] = []
        self.redis = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def connect_url(self) -> str:
        """Where a session starts: the WebSocket itself, or the cluster's placement."""
        if self.nodes == 1:
            return self.servers[0].ws_url
        return f"{self.servers[0].url}/api/connect"

    def pids(self) -> list[int]:
        pids = [p for server in self.servers for p in process_tree(server.pid)]
        if self.redis is not None and self.redis.process is not None:
            pids.append(self.redis.process.pid)
        return pids

    def rss_mb(self) -> float:
        total = sum(tree_rss_mb(server.pid) for server in self.servers)
        if self.redis is not None and self.redis.process is not None:
            total += tree_rss_mb(self.redis.process.pid)
        return total

    async def wait_idle(self, timeout: float) -> None:
        await asyncio.gather(*(server.wait_sessions(0, timeout) for server in self.servers))

    async def __aenter__(self) -> ServedSystem:
        await self._stack.__aenter__()
        try:
            env = dict(self.env)
            if self.nodes > 1:
                # the tests' private redis-server
                from tests.support.redis_server import RedisServer

                self.redis = await self._stack.enter_async_context(RedisServer())
                env["REDIS_URL"] = self.redis.url
            names = (["capacity"] if self.nodes == 1
                     else [f"capacity-node{i}" for i in range(self.nodes)])
            self.servers = [
                Server(name, env | ({"NODE_ID": name} if self.nodes > 1 else {}), fake=FAKE_ALL,
                       answer=self.answer)
                for name in names
            ]
            for server in self.servers:
                server.start()
                self._stack.callback(server.stop)
            await asyncio.gather(*(server.wait_ready() for server in self.servers))
            if self.nodes > 1:
                await self._until_all_nodes_listed()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _until_all_nodes_listed(self, timeout: float = 30.0) -> None:
        async with httpx.AsyncClient() as http:
            for _ in range(int(timeout / 0.2)):
                nodes = (await http.get(f"{self.servers[0].url}/api/nodes", timeout=5)).json()
                if len(nodes) >= self.nodes:
                    return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the cluster lists fewer than {self.nodes} nodes after {timeout:.0f} s")

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()


async def open_session_url(url: str, http: httpx.AsyncClient) -> str | None:
    """The WebSocket URL of a new session: `url` itself, or where the cluster places it."""
    if url.startswith("ws"):
        return url
    r = await http.post(url, json={"transport": "websocket"}, timeout=10)
    return r.json()["ws_url"] if r.status_code == 200 else None
