"""A private `redis-server` on a free loopback port, for the cluster tests (never a system one).

    async with RedisServer() as redis:   # redis.url: redis://127.0.0.1:<port>/0
        ...
        await redis.stop()               # Redis going away mid-test
        await redis.start()              # and coming back on the same port

No persistence (no RDB, no AOF), so nothing is written outside its temporary directory.
Missing `redis-server` (installed by the Makefile's APT_PACKAGES) skips with the reason.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile

import pytest

from tests.support.polling import until
from tests.support.server import free_port


class RedisServer:
    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (make test installs it: APT_PACKAGES)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="redis-test-")

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        await until(self._answers, 10, f"redis-server on port {self.port}", interval=0.05)

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            try:
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        self.process = None

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()
        self._dir.cleanup()


@pytest.fixture
async def redis_server():
    """A fresh, empty redis-server of the test's own."""
    async with RedisServer() as server:
        yield server
