"""The server under test: `python -m bot serve` in a subprocess on a free port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from bench.common import OUT_DIR, ROOT
from bot.processes import free_port

# The stages a bench's server hands to the instant stand-ins (tests/support/fakes.py), as
# `Server(fake=…)` or, for a bench run as a whole (its smoke test), BENCH_FAKE=stt,llm,tts.
FAKE_ALL = "stt,llm,tts"


class Server:
    """`python -m bot serve` in a subprocess on a free port, as in production.

    `env` overrides settings (e.g. STREAMING_BRIDGE=false). `fake` names the stages the
    instant stand-ins answer (e.g. "stt,llm,tts"; default BENCH_FAKE), `answer` what the
    fake LLM says: the server is then `python -m tests.support.fakes serve`. The greeting
    is off so that every bot sound is an answer, and the per-client session limits too (every
    benchmark client is on loopback). Its log goes to OUT_DIR/<name>.log (out/bench/).
    """

    def __init__(self, name: str, env: dict[str, str] | None = None, startup_timeout: float = 240.0,
                 fake: str | None = None, answer: str | None = None):
        self.name = name
        self.fake = os.environ.get("BENCH_FAKE", "") if fake is None else fake
        self.answer = answer
        self.env = {
            "GREETING": "", "MAX_SESSIONS_PER_CLIENT": "0", "MAX_NEW_SESSIONS_PER_MINUTE": "0",
            **(env or {}),
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.startup_timeout = startup_timeout
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = OUT_DIR / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> Server:
        env = {**os.environ, **self.env}
        self._log = self.log_path.open("w")
        command = [sys.executable, "-m", "bot", "serve"]
        if self.fake:
            command = [sys.executable, "-m", "tests.support.fakes", "serve", "--fake", self.fake]
            command += ["--answer", self.answer] if self.answer else []
        self.proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    async def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        async with httpx.AsyncClient() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server {self.name} exited ({self.proc.returncode}):\n"
                                       f"{self.log_tail()}")
                try:
                    r = await http.get(f"{self.url}/api/health", timeout=2)
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server {self.name} not ready in {self.startup_timeout}s:\n"
                                       f"{self.log_tail()}")
                await asyncio.sleep(0.2)

    async def health(self) -> dict:
        import httpx

        async with httpx.AsyncClient() as http:
            return (await http.get(f"{self.url}/api/health", timeout=5)).json()

    async def wait_sessions(self, count: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.health())["sessions"] <= count:
                return True
            await asyncio.sleep(0.2)
        return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down, the LLM server with it
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    async def __aenter__(self) -> Server:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop()
