"""Per-user memory that lasts across sessions (MEMORY_ENABLED; README "Memory").

A client names its user with an opaque id (`/ws?user_id=…`, `request_data.user_id` with
a WebRTC offer, or `user_id` in its RTVI client-ready data, which the URL's overrides);
without one nothing is kept. What is kept: the facts the user asked the
agent to remember ("remember that …") and their most recent words, as they are said, and a
rolling summary the LLM rewrites when a session ends (MEMORY_SUMMARIZE). A new session of
the same user gets them in its instructions, within MEMORY_MAX_CHARS. Stored in Redis in
cluster mode (REDIS_URL), else in a local SQLite file (MEMORY_PATH).
"""

from bot.memory.keeper import MemoryKeeper, valid_user_id
from bot.memory.store import MemoryStore, RedisMemoryStore, SqliteMemoryStore, UserMemory

__all__ = [
    "MemoryKeeper",
    "MemoryStore",
    "RedisMemoryStore",
    "SqliteMemoryStore",
    "UserMemory",
    "valid_user_id",
]
