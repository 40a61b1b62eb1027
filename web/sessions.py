"""The live sessions of one server: admission under limits, state, clean teardown.

A session holds a `Slot` from admission until its client leaves (or it fails to start):
MAX_SESSIONS and the per-client limits count slots, so a client that reconnects does not
wait for its previous session's teardown, which goes on outside the count.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from bot.session import Session
from processors.observers.session_state import SessionState
from web.limits import ClientLimitError, ClientLimits

__all__ = ["ClientLimitError", "LiveSession", "SessionLimitError", "SessionRegistry", "Slot"]


class SessionLimitError(RuntimeError):
    """The server already holds its maximum number of sessions."""


class Slot:
    """One admitted session's place in the counts; `release()` is idempotent."""

    def __init__(self, registry: SessionRegistry, client: str):
        self.client = client
        self.held = True
        self._registry = registry

    def release(self) -> None:
        if self.held:
            self.held = False
            self._registry._released(self)


class SessionLevers(Protocol):
    """What the admin API steers a session with: `bot.session_control.SessionControl` in
    this process, `web.spawner.SessionProcessLink` for a session in its own process."""

    instructions: str
    updates: int

    async def update_instructions(
        self, text: str, mode: Any = ..., *, timeout: float = ...
    ) -> bool: ...
    async def say(self, text: str) -> None: ...
    async def end(self, reason: str | None = None) -> None: ...
    async def cancel(self) -> None: ...
    def context_summary(self) -> dict: ...


@dataclass
class LiveSession:
    id: str
    transport: str
    session: Session | None = None  # the session, when it runs in this process
    remote: SessionLevers | None = None  # its link, when it runs in a session process
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    state: SessionState = SessionState.LISTENING
    turns: int = 0
    task: asyncio.Task | None = None
    slot: Slot | None = None
    # The session's most recent turn records (`TurnRecord.to_dict()`), bounded.
    history: deque[dict] = field(default_factory=lambda: deque(maxlen=50))

    @property
    def control(self) -> SessionLevers | None:
        """None while the session is starting or ending."""
        if self.remote is not None:
            return self.remote
        return self.session.control if self.session else None

    @property
    def in_own_process(self) -> bool:
        return self.remote is not None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "state": self.state.value,
            "started_at": self.started_at,
            "duration_secs": round(time.time() - self.started_at, 1),
            "turns": self.turns,
            "pid": self.pid,
        }


# (event, session, payload): "started" / "released" (its client left) / "ended" (None),
# "state" (SessionState), "turn" (`TurnRecord.to_dict()`). Called in the session's task;
# must not block.
SessionListener = Callable[[str, LiveSession, Any], None]


class SessionRegistry:
    def __init__(
        self, max_sessions: int, history_turns: int = 50, clients: ClientLimits | None = None
    ):
        self.max_sessions = max_sessions
        self.history_turns = history_turns
        self.clients = clients
        self.listeners: list[SessionListener] = []
        self._sessions: dict[str, LiveSession] = {}
        self._held = 0
        # SIGTERM: the server takes no new sessions while its live ones finish (web/drain.py).
        self.draining = False

    def _notify(self, event: str, live: LiveSession, payload: Any = None) -> None:
        for listener in self.listeners:
            try:
                listener(event, live, payload)
            except Exception:
                logger.exception(f"Session listener failed on {event!r}")

    def __len__(self) -> int:
        """Slots held: sessions admitted whose client has not left."""
        return self._held

    def processes(self) -> list[LiveSession]:
        """The sessions that run in session processes."""
        return [live for live in self._sessions.values() if live.in_own_process]

    def get(self, session_id: str) -> LiveSession | None:
        return self._sessions.get(session_id)

    def all(self) -> list[LiveSession]:
        return list(self._sessions.values())

    def refusal(self) -> str:
        return (
            f"The server is at its limit of {self.max_sessions} live sessions "
            "(MAX_SESSIONS); try again in a moment."
        )

    def reserve(self, client: str = "") -> Slot:
        """Claim a slot before accepting a connection.

        Raises `SessionLimitError` (the server is full) or `ClientLimitError` (this client
        address is at its own limits)."""
        if self.draining:
            raise SessionLimitError(
                "The server is shutting down and takes no new sessions; connect again "
                "(to another server, behind a load balancer or /api/connect)."
            )
        if self._held >= self.max_sessions:
            raise SessionLimitError(self.refusal())
        if self.clients is not None:
            self.clients.admit(client)
        self._held += 1
        return Slot(self, client)

    def _released(self, slot: Slot) -> None:
        self._held -= 1
        if self.clients is not None:
            self.clients.release(slot.client)

    def release(self, live: LiveSession) -> None:
        """The session's client has left: free its slot now; its teardown goes on."""
        if live.slot is not None and live.slot.held:
            live.slot.release()
            self._notify("released", live)

    async def run(self, slot: Slot, session: Session, transport: str, bot: Coroutine) -> None:
        """Run an admitted session's bot to completion; always frees its slot."""
        live = self._open(
            LiveSession(id=session.id, transport=transport, session=session, slot=slot)
        )
        session.on_state.append(lambda state: self.set_state(live, state))
        session.on_turn.append(lambda record: self.add_turn(live, record.to_dict()))
        try:
            await self._until_done(live, bot)
        finally:
            # Drop references so the session's pipeline can be garbage-collected.
            session.worker = session.context = session.metrics = session.state = None
            session.control = None

    def open_remote(
        self, slot: Slot, session_id: str, transport: str, pid: int, link: SessionLevers
    ) -> LiveSession:
        """Register an admitted session whose bot runs in a session process; then `track` it.

        The session process's link reports its state and turns through `set_state` /
        `add_turn`."""
        return self._open(
            LiveSession(id=session_id, transport=transport, remote=link, pid=pid, slot=slot)
        )

    async def track(self, live: LiveSession, until_exit: Coroutine) -> None:
        """Keep a session process's session registered until `until_exit` returns (run as
        live.task)."""
        await self._until_done(live, until_exit)

    def set_state(self, live: LiveSession, state: SessionState) -> None:
        live.state = state
        self._notify("state", live, state)

    def add_turn(self, live: LiveSession, record: dict) -> None:
        live.turns = max(live.turns, record.get("turn", 0))
        live.history.append(record)
        self._notify("turn", live, record)

    def _open(self, live: LiveSession) -> LiveSession:
        live.history = deque(maxlen=self.history_turns)
        live.task = asyncio.current_task()
        self._sessions[live.id] = live
        where = f" in process {live.pid}" if live.in_own_process else ""
        logger.bind(session_id=live.id).info(
            f"Session started ({live.transport}){where}; {len(self._sessions)} live"
        )
        self._notify("started", live)
        return live

    async def _until_done(self, live: LiveSession, bot: Coroutine) -> None:
        log = logger.bind(session_id=live.id)
        try:
            await bot
        except asyncio.CancelledError:
            log.info("Session cancelled")
            raise
        except Exception:
            log.exception("Session failed")
        finally:
            self.release(live)
            self._sessions.pop(live.id, None)
            log.info(f"Session ended; {len(self._sessions)} live")
            self._notify("ended", live)

    async def cancel_all(self) -> None:
        tasks = [live.task for live in self._sessions.values() if live.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
