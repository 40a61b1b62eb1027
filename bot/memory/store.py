"""Where per-user memory is kept: a local SQLite file, or Redis shared by every node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis

REDIS_PREFIX = "voice-agent:memory:"


@dataclass
class UserMemory:
    facts: list[str] = field(default_factory=list)  # what the user asked to be remembered
    recent: list[str] = field(default_factory=list)  # their latest words, oldest first
    summary: str = ""  # of their conversations so far, rewritten after each (by the LLM)
    updated: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> UserMemory:
        data = json.loads(raw)
        return cls(
            facts=list(data.get("facts", [])),
            recent=list(data.get("recent", [])),
            summary=str(data.get("summary", "")),
            updated=float(data.get("updated", 0.0)),
        )


class MemoryStore(Protocol):
    async def load(self, user_id: str) -> UserMemory | None: ...
    async def save(self, user_id: str, memory: UserMemory) -> None: ...
    async def delete(self, user_id: str) -> bool: ...
    async def close(self) -> None: ...


class SqliteMemoryStore:
    """One row per user in a SQLite file, made on the first save; calls run in a thread, one
    connection each."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _connect(self):
        """A connection in a transaction (committed unless it raises), then closed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(self.path, timeout=5.0)) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS user_memory "
                "(user_id TEXT PRIMARY KEY, memory TEXT NOT NULL, updated REAL NOT NULL)"
            )
            yield db

    def _load(self, user_id: str) -> UserMemory | None:
        if not self.path.exists():
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT memory FROM user_memory WHERE user_id = ?", (user_id,)
            ).fetchone()
        return UserMemory.from_json(row[0]) if row else None

    def _save(self, user_id: str, memory: UserMemory) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO user_memory (user_id, memory, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET memory = excluded.memory, "
                "updated = excluded.updated",
                (user_id, memory.to_json(), memory.updated),
            )

    def _delete(self, user_id: str) -> bool:
        if not self.path.exists():
            return False
        with self._connect() as db:
            return db.execute("DELETE FROM user_memory WHERE user_id = ?", (user_id,)).rowcount > 0

    async def load(self, user_id: str) -> UserMemory | None:
        return await asyncio.to_thread(self._load, user_id)

    async def save(self, user_id: str, memory: UserMemory) -> None:
        await asyncio.to_thread(self._save, user_id, memory)

    async def delete(self, user_id: str) -> bool:
        return await asyncio.to_thread(self._delete, user_id)

    async def close(self) -> None:
        pass


class RedisMemoryStore:
    """One key per user (`voice-agent:memory:{user_id}`), shared by every node."""

    def __init__(self, url: str):
        self._redis = redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )

    async def load(self, user_id: str) -> UserMemory | None:
        raw = await self._redis.get(REDIS_PREFIX + user_id)
        return UserMemory.from_json(raw) if raw else None

    async def save(self, user_id: str, memory: UserMemory) -> None:
        await self._redis.set(REDIS_PREFIX + user_id, memory.to_json())

    async def delete(self, user_id: str) -> bool:
        return bool(await self._redis.delete(REDIS_PREFIX + user_id))

    async def close(self) -> None:
        await self._redis.aclose()
