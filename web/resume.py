"""Resuming a conversation after a dropped connection or a dead node (SESSION_RESUME_SECS).

A session's first message to its client carries a `resume_token` beside its `session_id`.
After every reply the conversation (its messages, instructions and user id) is saved under
the session id with the token's hash, expiring SESSION_RESUME_SECS after that reply: in Redis in
cluster mode (so any node can resume it), else in this process. A client that reconnects
with `/ws?session_id=…&resume_token=…`, or a WebRTC offer whose `requestData` holds both,
within that time gets a new session that starts from those messages; the token works once.
A wrong or expired one is refused with the reason (WebSocket close 1008, HTTP 409).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable

import redis.asyncio as redis
from loguru import logger

from bot.config import Settings
from bot.pipeline import Session

REDIS_PREFIX = "voice-agent:resume:"


class ResumeRefused(ValueError):
    """The session id and token do not name a conversation that can be resumed."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ResumeKeeper:
    """`forward`: in a session process (SESSION_PROCESSES=true), each record goes to the
    server, whose own keeper holds it (`keep`) and checks the ticket before it starts a
    session process for a resume."""

    def __init__(self, settings: Settings, forward: Callable[[str, str], None] | None = None):
        self.secs = settings.session_resume_secs
        self._forward = forward
        self._redis = None
        if settings.cluster and forward is None:
            self._redis = redis.from_url(
                settings.redis_url.get_secret_value(),
                decode_responses=True,
                socket_timeout=2.0,
                socket_connect_timeout=2.0,
            )
        self._local: dict[str, tuple[float, str]] = {}  # session id → (expires, record)
        self._writes: set[asyncio.Task] = set()

    async def keep(self, session_id: str, record: str) -> None:
        """Save a conversation's record (JSON) for resuming, for SESSION_RESUME_SECS."""
        if self._forward is not None:
            self._forward(session_id, record)
            return
        if self._redis is not None:
            await self._redis.set(REDIS_PREFIX + session_id, record, px=int(self.secs * 1000))
            return
        now = time.monotonic()
        self._local = {k: v for k, v in self._local.items() if v[0] > now}
        self._local[session_id] = (now + self.secs, record)

    async def _take(self, session_id: str) -> str | None:
        """The record, removed (a token works once)."""
        if self._redis is not None:
            return await self._redis.getdel(REDIS_PREFIX + session_id)
        expires, record = self._local.pop(session_id, (0.0, None))
        return record if expires > time.monotonic() else None

    def enrol(self, session: Session) -> None:
        """Give `session` a resume token and save its conversation after every reply."""
        token = secrets.token_urlsafe(24)
        session.resume_token = token
        digest = _digest(token)

        async def write(record: str) -> None:
            try:
                await self.keep(session.id, record)
            except Exception as e:
                logger.bind(session_id=session.id).warning(
                    f"The conversation could not be saved for resuming ({e}); the session goes on"
                )

        def keep(messages: list, instructions: str | None) -> None:
            saved = {
                "digest": digest,
                "messages": messages,
                "user_id": session.user_id,
                "instructions": instructions,
            }
            # Written apart from the session: its end (the client gone) does not cancel it.
            task = asyncio.create_task(write(json.dumps(saved, default=str)))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

        async def save(session: Session) -> None:
            context, control = session.context, session.control
            if context is not None:
                messages = [m for m in context.messages if isinstance(m, dict)]
                keep(messages, control.instructions if control else None)

        session.on_reply.append(save)
        if session.history:  # a resumed conversation: resumable again before its next reply
            keep(list(session.history), session.settings.system_prompt)

    async def resume(self, session_id: str, token: str) -> dict:
        """The saved conversation (messages, instructions, user_id); ResumeRefused if none."""
        try:
            raw = await self._take(session_id)
        except Exception as e:
            raise ResumeRefused(f"conversations cannot be resumed right now: {e}") from e
        if raw is None:
            raise ResumeRefused(
                f"no conversation {session_id!r} to resume (ended over "
                f"{self.secs:g} s ago, already resumed, or never saved)"
            )
        saved = json.loads(raw)
        if not hmac.compare_digest(saved["digest"], _digest(token)):
            await self.keep(session_id, raw)  # a wrong guess does not spend the real token
            raise ResumeRefused("wrong resume_token for this session")
        return saved

    async def close(self) -> None:
        await asyncio.gather(*self._writes, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()


async def take_conversation(
    keeper: ResumeKeeper | None, ticket: tuple[str, str] | None
) -> dict | None:
    """The conversation a (session id, resume token) ticket names, taken from `keeper`; None
    without a ticket; ResumeRefused when it resumes nothing."""
    if ticket is None:
        return None
    if keeper is None:
        raise ResumeRefused("resuming is off on this server (SESSION_RESUME_SECS=0)")
    return await keeper.resume(*ticket)
