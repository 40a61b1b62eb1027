"""Bots in worker subprocesses: a crashing bot never takes the server down.

`BotSpawner.spawn_daily()` starts `python -m bot daily`, hands it the room and token on
stdin (never on the command line, where `ps` would show the token), waits until the
worker says it is ready, and then tracks it in the session registry until it exits.
Workers share the server's loopback LLM server instead of loading their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from web.sessions import SessionRegistry

READY_LINE = "READY"
ROOT = Path(__file__).resolve().parents[1]


class SpawnError(RuntimeError):
    """The worker process could not start or exited before it was ready."""


class BotSpawner:
    def __init__(
        self,
        registry: SessionRegistry,
        ready_timeout_secs: float,
        worker_env: Callable[[], dict[str, str]] = dict,
    ):
        self.registry = registry
        self.ready_timeout_secs = ready_timeout_secs
        self.worker_env = worker_env  # evaluated per spawn: e.g. the running LLM server's URL

    async def spawn_daily(self, room_url: str, token: str) -> str:
        """Start a bot for a Daily room; returns its session id. The slot must be reserved."""
        session_id = uuid.uuid4().hex[:12]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "daily",
                cwd=ROOT,
                env={**os.environ, **self.worker_env()},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            self.registry.release_reservation()
            raise SpawnError(f"could not start a bot process: {e}") from e
        job = {"room_url": room_url, "token": token, "session_id": session_id}
        proc.stdin.write((json.dumps(job) + "\n").encode())
        await proc.stdin.drain()
        proc.stdin.close()

        stderr_tail: list[str] = []
        drain_stderr = asyncio.create_task(_collect(proc.stderr, stderr_tail))
        try:
            await asyncio.wait_for(_until_ready(proc.stdout), self.ready_timeout_secs)
        except (TimeoutError, EOFError) as e:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            await drain_stderr
            self.registry.release_reservation()
            why = "did not get ready in time" if isinstance(e, TimeoutError) else f"exited with code {proc.returncode}"
            raise SpawnError(f"the bot process {why}: {_tail(stderr_tail)}") from e

        async def run_until_exit():
            code = await proc.wait()
            await drain_stderr
            log = logger.bind(session_id=session_id)
            if code == 0:
                log.info("Daily bot process finished")
            else:
                log.warning(f"Daily bot process exited with code {code}: {_tail(stderr_tail)}")

        # Registered like any session (counts towards MAX_SESSIONS, listed, cancellable).
        task = asyncio.create_task(
            self.registry.run_process(session_id, "daily", proc, run_until_exit())
        )
        del task  # the registry owns it
        return session_id


async def _until_ready(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        if line.decode(errors="replace").strip() == READY_LINE:
            return
    raise EOFError


async def _collect(stream: asyncio.StreamReader, tail: list[str], keep: int = 40) -> None:
    while line := await stream.readline():
        tail.append(line.decode(errors="replace").rstrip())
        del tail[:-keep]


def _tail(lines: list[str]) -> str:
    interesting = [l for l in lines if "error" in l.lower() or "exception" in l.lower()] or lines
    return " | ".join(interesting[-3:])[-600:] or "(no output)"
