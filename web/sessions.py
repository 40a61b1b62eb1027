"""The live sessions of one server: admission under a limit, state, clean teardown."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from bot.pipeline import Session
from processors.session_state import SessionState


class SessionLimitError(RuntimeError):
    """The server already holds its maximum number of sessions."""


@dataclass
class LiveSession:
    session: Session
    transport: str
    started_at: float = field(default_factory=time.time)
    state: SessionState = SessionState.LISTENING
    turns: int = 0
    task: asyncio.Task | None = None
    # The session's most recent turn records (`TurnRecord.to_dict()`), bounded.
    history: deque[dict] = field(default_factory=lambda: deque(maxlen=50))

    @property
    def id(self) -> str:
        return self.session.id

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "state": self.state.value,
            "started_at": self.started_at,
            "duration_secs": round(time.time() - self.started_at, 1),
            "turns": self.turns,
        }


@dataclass
class ProcessSession:
    """A session whose bot runs in a worker subprocess (web/spawner.py)."""

    id: str
    transport: str
    process: asyncio.subprocess.Process
    started_at: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "pid": self.process.pid,
            "started_at": self.started_at,
            "duration_secs": round(time.time() - self.started_at, 1),
        }


# (event, session, payload): "started" / "ended" (None), "state" (SessionState),
# "turn" (TurnRecord). Called in the session's task; must not block.
SessionListener = Callable[[str, LiveSession, Any], None]


class SessionRegistry:
    def __init__(self, max_sessions: int, history_turns: int = 50):
        self.max_sessions = max_sessions
        self.history_turns = history_turns
        self.listeners: list[SessionListener] = []
        self._sessions: dict[str, LiveSession] = {}
        self._processes: dict[str, ProcessSession] = {}
        self._reserved = 0

    def _notify(self, event: str, live: LiveSession, payload: Any = None) -> None:
        for listener in self.listeners:
            try:
                listener(event, live, payload)
            except Exception:
                logger.exception(f"Session listener failed on {event!r}")

    def __len__(self) -> int:
        return len(self._sessions) + len(self._processes) + self._reserved

    def processes(self) -> list[ProcessSession]:
        return list(self._processes.values())

    def get(self, session_id: str) -> LiveSession | None:
        return self._sessions.get(session_id)

    def all(self) -> list[LiveSession]:
        return list(self._sessions.values())

    def refusal(self) -> str:
        return (
            f"The server is at its limit of {self.max_sessions} live sessions "
            "(MAX_SESSIONS); try again in a moment."
        )

    def reserve(self) -> None:
        """Claim a slot before accepting a connection (raises `SessionLimitError`)."""
        if len(self) >= self.max_sessions:
            raise SessionLimitError(self.refusal())
        self._reserved += 1

    def release_reservation(self) -> None:
        self._reserved = max(0, self._reserved - 1)

    async def run(self, session: Session, transport: str, bot: Coroutine) -> None:
        """Run a reserved session's bot to completion; always frees its slot."""
        live = LiveSession(
            session=session, transport=transport, history=deque(maxlen=self.history_turns)
        )
        self.release_reservation()
        self._sessions[session.id] = live
        live.task = asyncio.current_task()

        def on_state(state: SessionState) -> None:
            live.state = state
            self._notify("state", live, state)

        def on_turn(record) -> None:
            live.turns = max(live.turns, record.turn)
            live.history.append(record.to_dict())
            self._notify("turn", live, record)

        session.on_state.append(on_state)
        session.on_turn.append(on_turn)
        log = logger.bind(session_id=session.id)
        log.info(f"Session started ({transport}); {len(self._sessions)} live")
        self._notify("started", live)
        try:
            await bot
        except asyncio.CancelledError:
            log.info("Session cancelled")
            raise
        except Exception:
            log.exception("Session failed")
        finally:
            self._sessions.pop(session.id, None)
            # Drop references so the session's pipeline can be garbage-collected.
            session.worker = session.context = session.metrics = session.state = None
            session.control = None
            log.info(f"Session ended; {len(self._sessions)} live")
            self._notify("ended", live)

    async def run_process(
        self, session_id: str, transport: str, process: asyncio.subprocess.Process, until_exit: Coroutine
    ) -> None:
        """Track a reserved session running in a worker process until the process exits."""
        self.release_reservation()
        self._processes[session_id] = ProcessSession(session_id, transport, process)
        logger.bind(session_id=session_id).info(f"Session started in process {process.pid} ({transport})")
        try:
            await until_exit
        finally:
            self._processes.pop(session_id, None)

    async def end_process(self, session_id: str, timeout: float = 10.0) -> bool:
        entry = self._processes.get(session_id)
        if entry is None:
            return False
        if entry.process.returncode is None:
            entry.process.terminate()
            try:
                await asyncio.wait_for(entry.process.wait(), timeout)
            except TimeoutError:
                entry.process.kill()
        return True

    async def cancel_all(self) -> None:
        for session_id in list(self._processes):
            await self.end_process(session_id)
        tasks = [live.task for live in self._sessions.values() if live.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
