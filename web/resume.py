"""Resuming a conversation after a dropped connection or a dead node (SESSION_RESUME_SECS).

A session's first message to its client carries a `resume_token` beside its `session_id`.
From the moment its client connects, and again after every reply and when it ends, the
conversation (its messages, instructions and user id) is saved under the session id with the
token's hash: in Redis in cluster mode (so any node can resume it), else in this process.
While the session lives the record does not expire (in Redis: its expiry is pushed back every
`beat`, so a dead node's records outlive it by SESSION_RESUME_SECS, and at most a beat more);
once the session ends (its client dropped, or the server ended it) it is kept
SESSION_RESUME_SECS more. A client that reconnects with `/ws?session_id=…&resume_token=…`, or
a WebRTC offer whose `requestData` holds both, within that time gets a new session that starts
from those messages; the token works once (the record is replaced by a mark that no later
write of the old session revives). A wrong or expired one is refused with the reason
(WebSocket close 1008, HTTP 409).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable

import redis.asyncio as redis
from loguru import logger

from bot.config import Settings
from bot.session import Session

REDIS_PREFIX = "voice-agent:resume:"
# What a resumed conversation's record becomes: its token spent, its old session's writes void.
SPENT = "spent"
MAX_BEAT_SECS = 10.0

# KEYS[1]: the record; ARGV: the record, its lifetime (ms), SPENT. Not over a spent one.
_WRITE = """
if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS[1]: the record; ARGV: the record as read, SPENT, its lifetime (ms). Spends it if unchanged.
_SPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class ResumeRefused(ValueError):
    """The session id and token do not name a conversation that can be resumed."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ResumeKeeper:
    """`forward`: in a session process (SESSION_PROCESSES=true), each record goes to the
    server (with whether its session has ended), whose own keeper holds it (`keep`) and checks
    the ticket before it starts a session process for a resume. The server's keeper also hears
    of every session's end from its registry (`on_session_event`): a session process that died
    said nothing."""

    def __init__(
        self, settings: Settings, forward: Callable[[str, str, bool], None] | None = None
    ):
        self.secs = settings.session_resume_secs
        # How often a live session's record in Redis has its expiry pushed back.
        self.beat = min(self.secs / 2, MAX_BEAT_SECS)
        self._forward = forward
        self._redis = None
        if settings.cluster and forward is None:
            self._redis = redis.from_url(
                settings.redis_url.get_secret_value(),
                decode_responses=True,
                socket_timeout=2.0,
                socket_connect_timeout=2.0,
            )
            self._write = self._redis.register_script(_WRITE)
            self._spend = self._redis.register_script(_SPEND)
        self._local: dict[str, tuple[float, str]] = {}  # session id → (expires, record)
        self._live: set[str] = set()  # sessions whose records do not expire yet
        self._ended: dict[str, float] = {}  # session id → when it ended (lately)
        self._refresher: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()

    def _lifetime(self, session_id: str, ended: bool) -> float:
        """How long the record written now lasts; notes whether its session is live."""
        now = time.monotonic()
        self._ended = {k: t for k, t in self._ended.items() if t > now - self.secs - self.beat}
        if session_id in self._ended:  # a late write of a session that has ended
            return self.secs
        if ended:
            self._ended[session_id] = now
            self._live.discard(session_id)
            return self.secs
        self._live.add(session_id)
        return math.inf

    async def keep(self, session_id: str, record: str, ended: bool = False) -> None:
        """Save a conversation's record (JSON) for resuming: while its session lives, then
        (`ended`) for SESSION_RESUME_SECS."""
        if self._forward is not None:
            self._forward(session_id, record, ended)
            return
        lifetime = self._lifetime(session_id, ended)
        if self._redis is not None:
            if lifetime == math.inf:
                lifetime = self.secs + self.beat
                if self._refresher is None or self._refresher.done():
                    self._refresher = asyncio.create_task(self._refresh())
            await self._write(
                keys=[REDIS_PREFIX + session_id], args=[record, int(lifetime * 1000), SPENT]
            )
            return
        now = time.monotonic()
        self._local = {k: v for k, v in self._local.items() if v[0] > now}
        if self._local.get(session_id, (0.0, None))[1] != SPENT:
            self._local[session_id] = (now + lifetime, record)

    async def ended(self, session_id: str) -> None:
        """`session_id`'s session is over: its conversation is kept SESSION_RESUME_SECS from
        now (unless its last record said so already)."""
        if self._forward is not None or session_id in self._ended:
            return
        self._lifetime(session_id, ended=True)
        if self._redis is not None:
            await self._redis.pexpire(REDIS_PREFIX + session_id, int(self.secs * 1000))
        elif session_id in self._local:
            self._local[session_id] = (time.monotonic() + self.secs, self._local[session_id][1])

    def on_session_event(self, event: str, live, _=None) -> None:
        """A session registry listener: a session that ended starts its resume window."""
        if event == "ended":
            self._track(self._settle(self.ended(live.id), live.id))

    async def _refresh(self) -> None:
        """Push back the expiry of the live sessions' records in Redis, every beat."""
        while True:
            await asyncio.sleep(self.beat)
            if not self._live:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for session_id in self._live:
                        pipe.pexpire(REDIS_PREFIX + session_id, int((self.secs + self.beat) * 1000))
                    await pipe.execute()
            except Exception as e:
                logger.warning(f"Live conversations' resume records could not be kept ({e})")

    async def _settle(self, write, session_id: str) -> None:
        try:
            await write
        except Exception as e:
            logger.bind(session_id=session_id).warning(
                f"The conversation could not be saved for resuming ({e}); the session goes on"
            )

    def _track(self, write) -> None:
        # Written apart from the session: its end (the client gone) does not cancel it.
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _read(self, session_id: str) -> str | None:
        if self._redis is not None:
            return await self._redis.get(REDIS_PREFIX + session_id)
        expires, record = self._local.get(session_id, (0.0, None))
        return record if expires > time.monotonic() else None

    async def _spent(self, session_id: str, record: str) -> bool:
        """Spend the ticket: the record read is replaced by SPENT, if nothing changed it since."""
        if self._redis is not None:
            args = [record, SPENT, int((self.secs + self.beat) * 1000)]
            return bool(await self._spend(keys=[REDIS_PREFIX + session_id], args=args))
        expires, kept = self._local.get(session_id, (0.0, None))
        if kept != record:
            return False
        self._local[session_id] = (max(expires, time.monotonic() + self.secs + self.beat), SPENT)
        return True

    def enrol(self, session: Session) -> None:
        """Give `session` a resume token and save its conversation once its client is
        connected, after every reply and when it ends."""
        token = secrets.token_urlsafe(24)
        session.resume_token = token
        digest = _digest(token)
        kept = False

        async def save(session: Session, ended: bool = False) -> None:
            nonlocal kept
            context, control = session.context, session.control
            if context is None or (ended and not kept):  # never connected: nothing to resume
                return
            kept = True
            saved = {
                "digest": digest,
                "messages": [m for m in context.messages if isinstance(m, dict)],
                "user_id": session.user_id,
                "instructions": control.instructions if control else None,
            }
            record = json.dumps(saved, default=str)
            self._track(self._settle(self.keep(session.id, record, ended), session.id))

        async def save_at_end(session: Session) -> None:
            await save(session, ended=True)

        session.on_connected.append(save)
        session.on_reply.append(save)
        session.on_end.append(save_at_end)

    async def resume(self, session_id: str, token: str) -> dict:
        """The saved conversation (messages, instructions, user_id); ResumeRefused if none."""
        try:
            for _ in range(3):  # a reply saved meanwhile by a session still live: read again
                raw = await self._read(session_id)
                if raw is None or raw == SPENT:
                    raise ResumeRefused(
                        f"no conversation {session_id!r} to resume (ended over "
                        f"{self.secs:g} s ago, already resumed, or never saved)"
                    )
                saved = json.loads(raw)
                if not hmac.compare_digest(saved["digest"], _digest(token)):
                    raise ResumeRefused("wrong resume_token for this session")
                if await self._spent(session_id, raw):
                    return saved
        except ResumeRefused:
            raise
        except Exception as e:
            raise ResumeRefused(f"conversations cannot be resumed right now: {e}") from e
        raise ResumeRefused(f"conversation {session_id!r} is being resumed by another client")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
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
