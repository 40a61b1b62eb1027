"""Bots in session processes: a crashing bot never takes the server down.

`BotSpawner.spawn()` gives one session to a `python -m bot session-process` process
(web/session_process.py): the session process gets the settings (secrets included, on stdin,
never on the command line, where `ps` would show them) and loads its models, then gets the
session's job, says when it is ready, and the session is registered in the `SessionRegistry`,
where it counts towards MAX_SESSIONS and shows on the dashboard like any other. Loading takes
seconds, so with SESSION_PROCESSES on the spawner keeps SESSION_PROCESS_SPARES session
processes loaded and waiting: a new session takes one and another starts loading behind it.
`SessionProcessLink` is this side of a session process's pipes: its events (state, turns,
its session's instructions) come on its stdout, the admin API's commands go to its stdin,
and its log lines (stderr) are passed on to this process's log stream.
Session processes share the server's loopback LLM server instead of loading their own, and
count their provider errors and fallbacks in the server's metrics directory
(web/process_metrics.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from bot.config import Settings
from bot.session_control import InstructionMode
from processors.observers.session_state import SessionState
from web.process_metrics import SessionProcessMetrics
from web.sessions import SessionRegistry, Slot

ROOT = Path(__file__).resolve().parents[1]
COMMAND_TIMEOUT_SECS = 15.0


class SpawnError(RuntimeError):
    """The session process could not start or exited before it was ready."""


def session_process_settings(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The settings as the session process's job carries them: JSON, with the secrets' values."""
    data = settings.model_dump(mode="json")
    data.update(settings.secret_values())
    data.update(overrides)
    return data


class SessionProcessLink:
    """One session process's pipes, and the admin levers of its session."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        registry: SessionRegistry,
        instructions: str,
        log_stream: TextIO,
        keep_resumable: Callable[[str, str, bool], Awaitable[None]] | None = None,
    ):
        self.process = process
        # Where the session's conversation is kept for resuming (web/resume.py), if anywhere.
        self._keep_resumable = keep_resumable
        self._keeping: set[asyncio.Task] = set()
        self.session_id = ""  # set by `assign`
        self.transport = ""
        self.port: int | None = None
        self.loaded = False  # its models are loaded (a spare can start a session at once)
        self.on_exit: list[Callable[[], Any]] = []
        # The session's levers as the session process last reported them.
        self.instructions = instructions
        self.updates = 0
        self._context: dict = {"messages": 0}
        self._registry = registry
        self._log_stream = log_stream
        self._ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._replies: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._stderr_tail: list[str] = []
        self._readers = [
            asyncio.create_task(self._read_events()),
            asyncio.create_task(self._pass_logs_on()),
        ]

    # --- the admin API's levers (web/admin.py) ---------------------------------------------
    async def update_instructions(
        self, text: str, mode: InstructionMode = InstructionMode.REPLACE, *, timeout: float = 10.0
    ) -> bool:
        reply = await self._command("instructions", text=text, mode=str(mode), timeout=timeout)
        return bool(reply.get("applied"))

    async def say(self, text: str) -> None:
        await self._command("say", text=text)

    async def end(self, reason: str | None = None) -> None:
        await self._command("end", reason=reason)

    async def cancel(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()

    def context_summary(self) -> dict:
        return dict(self._context)

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def assign(self, session_id: str, transport: str, **job: Any) -> None:
        """Give the (loaded or loading) session process its session."""
        self.session_id, self.transport = session_id, transport
        self.process.stdin.write(
            (json.dumps({"session_id": session_id, "transport": transport, **job}) + "\n").encode()
        )
        await self.process.stdin.drain()

    async def wait_ready(self, timeout: float) -> None:
        """Until the session process has its models loaded and its session's transport up."""
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except (TimeoutError, EOFError) as e:
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
            await asyncio.gather(*self._readers, return_exceptions=True)
            why = (
                "did not get ready in time"
                if isinstance(e, TimeoutError)
                else f"exited with code {self.process.returncode}"
            )
            raise SpawnError(f"the bot process {why}: {self.error_summary()}") from e

    async def until_exit(self) -> None:
        """Wait for the session process to exit; if the wait is cancelled, stop it."""
        log = logger.bind(session_id=self.session_id)
        try:
            code = await self.process.wait()
        except asyncio.CancelledError:
            await self.stop()
            raise
        finally:
            await asyncio.gather(*self._readers, return_exceptions=True)
            for callback in self.on_exit:
                callback()
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_exception(ConnectionError("the session's process has ended"))
        if code == 0:
            log.info(f"Session process {self.process.pid} finished")
        else:
            log.warning(
                f"Session process {self.process.pid} exited with code {code}: "
                f"{self.error_summary()}"
            )

    async def stop(self, timeout: float = 10.0) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def error_summary(self) -> str:
        lines = self._stderr_tail
        interesting = [
            l for l in lines if "error" in l.lower() or "exception" in l.lower()
        ] or lines
        return " | ".join(interesting[-3:])[-600:] or "(no output)"

    # --- pipes --------------------------------------------------------------------------------
    async def _command(self, cmd: str, **args: Any) -> dict:
        if self.process.returncode is not None or self.process.stdin is None:
            raise ConnectionError("the session's process has ended")
        request_id = next(self._ids)
        reply = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        try:
            self.process.stdin.write(
                (json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n").encode()
            )
            await self.process.stdin.drain()
            result = await asyncio.wait_for(reply, COMMAND_TIMEOUT_SECS)
        finally:
            self._replies.pop(request_id, None)
        if result.get("error"):
            raise ConnectionError(result["error"])
        return result

    async def _read_events(self) -> None:
        while line := await self.process.stdout.readline():
            try:
                event = json.loads(line)
                kind = event["event"]
            except (ValueError, KeyError, TypeError):
                self._log_line(line.decode(errors="replace"))
                continue
            self._on_event(kind, event)
        if not self._ready.done():
            self._ready.set_exception(EOFError())

    def _on_event(self, kind: str, event: dict) -> None:
        if kind == "loaded":  # models loaded; the session process waits for its job
            self.loaded = True
            return
        if kind == "ready":
            self.port = event.get("port")
            if not self._ready.done():
                self._ready.set_result(None)
            return
        if kind == "reply":
            reply = self._replies.get(event.get("id"))
            if reply is not None and not reply.done():
                reply.set_result(event)
            return
        if kind == "resumable" and isinstance(event.get("record"), str):
            if self._keep_resumable is not None and self.session_id:
                task = asyncio.create_task(self._keep(event["record"], bool(event.get("ended"))))
                self._keeping.add(task)
                task.add_done_callback(self._keeping.discard)
            return
        if kind == "levers":
            self.instructions = event.get("instructions", self.instructions)
            self.updates = event.get("updates", self.updates)
            self._context = event.get("context") or self._context
            return
        live = self._registry.get(self.session_id)
        if live is None:
            return
        if kind == "released":  # its client has left; the session process is ending the session
            self._registry.release(live)
        elif kind == "state":
            try:
                self._registry.set_state(live, SessionState(event["state"]))
            except (KeyError, ValueError):
                pass
        elif kind == "turn" and isinstance(event.get("record"), dict):
            self._registry.add_turn(live, event["record"])

    async def _keep(self, record: str, ended: bool) -> None:
        try:
            await self._keep_resumable(self.session_id, record, ended)
        except Exception as e:
            logger.warning(
                f"Session {self.session_id}'s conversation could not be saved for "
                f"resuming ({e}); the session goes on"
            )

    async def _pass_logs_on(self) -> None:
        while line := await self.process.stderr.readline():
            self._log_line(line.decode(errors="replace"))

    def _log_line(self, text: str) -> None:
        # The session process tags and redacts its own lines (bot/logs.py): they go on as they are.
        self._stderr_tail.append(text.rstrip())
        del self._stderr_tail[:-40]
        try:
            self._log_stream.write(text if text.endswith("\n") else text + "\n")
            self._log_stream.flush()
        except (OSError, ValueError):
            pass


class BotSpawner:
    def __init__(
        self,
        settings: Settings,
        registry: SessionRegistry,
        ready_timeout_secs: float,
        metrics: SessionProcessMetrics,
        process_overrides: Callable[[], dict[str, Any]] = dict,
        spares: int = 0,
        command: list[str] | None = None,
        keep_resumable: Callable[[str, str, bool], Awaitable[None]] | None = None,
    ):
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.ready_timeout_secs = ready_timeout_secs
        # Evaluated per session process: e.g. the running LLM server's URL.
        self.process_overrides = process_overrides
        self.spares = spares
        self.command = command or [sys.executable, "-m", "bot", "session-process"]
        self.keep_resumable = keep_resumable
        self._spares: list[SessionProcessLink] = []
        self._starting: set[asyncio.Task] = set()

    @property
    def waiting(self) -> int:
        """Spare session processes alive or starting."""
        return sum(link.alive for link in self._spares) + len(self._starting)

    @property
    def loaded(self) -> int:
        """Spare session processes with their models loaded: sessions that start at once."""
        return sum(link.alive and link.loaded for link in self._spares)

    def keep_spares(self) -> None:
        """Start loading session processes until `spares` are alive and waiting (in the
        background)."""
        self._spares = [link for link in self._spares if link.alive]
        for _ in range(self.spares - len(self._spares) - len(self._starting)):
            task = asyncio.create_task(self._start_process())
            self._starting.add(task)
            task.add_done_callback(self._spare_started)

    def _spare_started(self, task: asyncio.Task) -> None:
        self._starting.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._spares.append(task.result())
        elif not task.cancelled():
            logger.warning(f"Could not start a spare session process: {task.exception()}")

    async def close(self) -> None:
        for task in self._starting:
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        spares, self._spares = self._spares, []
        await asyncio.gather(*(link.stop() for link in spares), return_exceptions=True)

    async def spawn(self, slot: Slot, transport: str, **job: Any) -> SessionProcessLink:
        """Run an admitted session in a session process; registered once ready (the slot is released
        if it cannot start)."""
        spare = next((link for link in self._spares if link.alive), None)
        link: SessionProcessLink | None = None
        try:
            if spare is not None:
                self._spares.remove(spare)
                link = spare
            else:
                link = await self._start_process()
            try:
                await link.assign(uuid.uuid4().hex[:12], transport, **job)
            except (OSError, ConnectionError):
                pass  # the session process has died already: wait_ready says how
            await link.wait_ready(self.ready_timeout_secs)
        except BaseException as e:  # including a client that left while its bot was starting
            slot.release()
            if link is not None and link.alive:
                link.process.kill()
            if isinstance(e, (OSError, ConnectionError)):
                raise SpawnError(f"could not start a bot process: {e}") from e
            raise
        finally:
            if self.spares:
                self.keep_spares()
        live = self.registry.open_remote(slot, link.session_id, transport, link.process.pid, link)
        live.task = asyncio.create_task(self.registry.track(live, link.until_exit()))
        return link

    async def spawn_daily(self, slot: Slot, room_url: str, token: str) -> str:
        """A bot for a Daily room; returns its session id."""
        link = await self.spawn(slot, "daily", room_url=room_url, token=token)
        return link.session_id

    async def _start_process(self) -> SessionProcessLink:
        """A session process loading its models, its settings on its stdin."""
        process = await asyncio.create_subprocess_exec(
            *self.command,
            cwd=ROOT,
            env={**os.environ, **self.metrics.environment()},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        settings = session_process_settings(self.settings, **self.process_overrides())
        process.stdin.write((json.dumps({"settings": settings}) + "\n").encode())
        await process.stdin.drain()
        log_stream = sys.stdout if self.settings.log_format == "json" else sys.stderr
        link = SessionProcessLink(
            process, self.registry, self.settings.system_prompt, log_stream, self.keep_resumable
        )
        link.on_exit.append(lambda: self.metrics.process_ended(process.pid))
        return link
