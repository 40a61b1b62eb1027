"""This node's part of the cluster: registry entries, relayed events, steering calls.

Each entry is rewritten every CLUSTER_HEARTBEAT_SECS with a TTL of CLUSTER_TTL_SECS, so a
node that dies leaves the registry within the TTL (the keys and channels:
web/cluster/keys.py).

Redis going away never ends a session: writes fail, are logged once per outage, and the
next heartbeat after it comes back rewrites everything; listing calls answer 503.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis
from loguru import logger
from redis.exceptions import RedisError

from bot.config import Settings
from web.cluster.keys import EVENTS_CHANNEL, index, key, now_ms
from web.cluster.steering import REDIS_TIMEOUT_SECS, ClusterUnavailable, SteeringCalls
from web.sessions import LiveSession, SessionRegistry

# Session events as the dashboard's event stream names them (web/observability.py).
DASHBOARD_EVENTS = {
    "started": "session-started",
    "state": "state",
    "turn": "turn",
    "ended": "session-ended",
}
RECONNECT_SECS = 0.5


class ClusterNode:
    """Registers this node and its sessions in Redis; relays events; answers and forwards calls.

    `remote_event(event, data)` is called for every dashboard event of another node."""

    def __init__(
        self,
        settings: Settings,
        registry: SessionRegistry,
        dispatch: Callable[..., Awaitable[tuple[int, Any]]],
    ):
        self.settings = settings
        self.registry = registry
        self.id = settings.node_name
        self.url = settings.node_address
        self.history_turns = registry.history_turns
        self.draining = False
        self.remote_event: Callable[[str, dict], None] = lambda event, data: None
        # Sessions of the other nodes with their recent turns, for the dashboard's snapshot.
        self.remote_sessions: dict[str, dict] = {}
        self.dispatch = dispatch
        url = settings.redis_url.get_secret_value()
        self._redis = redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_SECS,
            socket_connect_timeout=REDIS_TIMEOUT_SECS,
        )
        # Subscriptions wait for messages as long as it takes: no read timeout.
        self._subscriber = redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=REDIS_TIMEOUT_SECS,
            socket_keepalive=True,
        )
        self._outbox: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._handlers: set[asyncio.Task] = set()
        self._subscribed = asyncio.Event()
        self.steering = SteeringCalls(
            self.id, self._redis, self._subscribed, dispatch,
            settings.cluster_call_timeout_secs, on_redis_error=self._down,
        )
        self._registered = asyncio.Event()
        self._healthy = True
        self._cpu = (time.monotonic(), time.process_time())
        self.cpu_percent = 0.0
        registry.listeners.append(self._on_session_event)

    # --- life -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="cluster-heartbeat"),
            asyncio.create_task(self._listen(), name="cluster-listen"),
            asyncio.create_task(self._write(), name="cluster-write"),
        ]
        # Serve once this node listens for its calls and is listed (or Redis is not there).
        try:
            await asyncio.wait_for(self._registered.wait(), REDIS_TIMEOUT_SECS * 2)
        except TimeoutError:
            logger.warning("Cluster: Redis is not answering yet; this node will join when it does")
        logger.info(f"Cluster node {self.id!r} at {self.url}")

    async def stop(self) -> None:
        for task in self._tasks + list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._handlers, return_exceptions=True)
        # The ends of the sessions the shutdown just ended, still to be written and told.
        while not self._outbox.empty():
            try:
                await asyncio.wait_for(self._outbox.get_nowait()(), REDIS_TIMEOUT_SECS)
            except (RedisError, OSError, TimeoutError):
                break
        try:  # leave at once rather than after the TTL
            sessions = [s.id for s in self.registry.all()]
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(key("node", self.id), *[key("session", s) for s in sessions])
                pipe.zrem(index("node"), self.id)
                if sessions:
                    pipe.zrem(index("session"), *sessions)
                await pipe.execute()
        except RedisError:
            pass
        await self._redis.aclose()
        await self._subscriber.aclose()

    # --- the registry ---------------------------------------------------------------------
    def _ttl_ms(self) -> int:
        return int(self.settings.cluster_ttl_secs * 1000)

    def session_entry(self, live: LiveSession) -> dict:
        return {**live.summary(), "node": self.id, "node_url": self.url}

    def node_entry(self) -> dict:
        return {
            "id": self.id,
            "url": self.url,
            "sessions": len(self.registry),
            "max_sessions": self.registry.max_sessions,
            "cpu_percent": self.cpu_percent,
            "draining": self.draining,
            "pid": os.getpid(),
            "updated": time.time(),
        }

    def _measure_cpu(self) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        then_wall, then_cpu = self._cpu
        if wall > then_wall:
            self.cpu_percent = round(100.0 * (cpu - then_cpu) / (wall - then_wall), 1)
        self._cpu = (wall, cpu)

    async def _heartbeat(self) -> None:
        while True:
            self._measure_cpu()
            try:
                # Listed means reachable: no entries while calls for this node go unheard.
                await asyncio.wait_for(
                    self._subscribed.wait(), self.settings.cluster_heartbeat_secs
                )
            except TimeoutError:
                continue
            try:
                sessions = self.registry.all()
                expires = now_ms() + self._ttl_ms()
                async with self._redis.pipeline(transaction=False) as pipe:
                    self._put_node(pipe, json.dumps(self.node_entry()))
                    for live in sessions:
                        pipe.set(
                            key("session", live.id),
                            json.dumps(self.session_entry(live)),
                            px=self._ttl_ms(),
                        )
                        if live.history:
                            pipe.pexpire(key("turns", live.id), self._ttl_ms())
                    if sessions:
                        pipe.zadd(index("session"), {live.id: expires for live in sessions})
                    for kind in ("node", "session"):  # the dead's ids
                        pipe.zremrangebyscore(index(kind), "-inf", now_ms())
                    await pipe.execute()
                self._registered.set()
                await self._refresh_remote_sessions()
                self._up()
            except (RedisError, OSError) as e:
                self._down(e)
            await asyncio.sleep(self.settings.cluster_heartbeat_secs)

    async def _refresh_remote_sessions(self) -> None:
        entries = {e["id"]: e for e in await self._entries("session") if e.get("node") != self.id}
        for session_id in set(self.remote_sessions) - set(entries):
            self.remote_sessions.pop(session_id, None)
        new = [sid for sid in entries if sid not in self.remote_sessions]
        histories = {}
        if new:
            async with self._redis.pipeline(transaction=False) as pipe:
                for sid in new:
                    pipe.lrange(key("turns", sid), 0, -1)
                histories = dict(zip(new, await pipe.execute()))
        for sid, entry in entries.items():
            known = self.remote_sessions.get(sid)
            history = known["history"] if known else [json.loads(t) for t in histories.get(sid, [])]
            self.remote_sessions[sid] = {**entry, "history": history}

    def _up(self) -> None:
        if not self._healthy:
            logger.info("Cluster: Redis is back; this node's entries are rewritten")
        self._healthy = True

    def _down(self, error: Exception) -> None:
        if self._healthy:
            logger.warning(
                f"Cluster: Redis is unavailable ({error}); live sessions go on here, "
                "the cluster-wide registry is unavailable until it is back"
            )
        self._healthy = False

    def _put_node(self, pipe, entry: str) -> None:
        pipe.set(key("node", self.id), entry, px=self._ttl_ms())
        pipe.zadd(index("node"), {self.id: now_ms() + self._ttl_ms()})

    async def _entries(self, kind: str) -> list[dict]:
        ids = await self._redis.zrangebyscore(index(kind), now_ms(), "+inf")
        if not ids:
            return []
        return [json.loads(v) for v in await self._redis.mget([key(kind, i) for i in ids]) if v]

    async def _read(self, kind: str) -> list[dict]:
        try:
            return await self._entries(kind)
        except (RedisError, OSError) as e:
            self._down(e)
            raise ClusterUnavailable(f"the cluster registry (Redis) is unavailable: {e}") from e

    async def announce(self) -> None:
        """Rewrite this node's entry now (it starts or stops draining)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                self._put_node(pipe, json.dumps(self.node_entry()))
                await pipe.execute()
        except (RedisError, OSError) as e:
            self._down(e)

    async def placed(
        self, node_ids: list[str], secs: float, now: int | None = None
    ) -> dict[str, int]:
        """Sessions placed on each node in the last `secs` (`now`: ms, by default the clock)."""
        now = now_ms() if now is None else now
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for n in node_ids:
                    pipe.zremrangebyscore(key("placed", n), "-inf", now - int(secs * 1000))
                    pipe.zcard(key("placed", n))
                answers = await pipe.execute() if node_ids else []
        except (RedisError, OSError) as e:
            self._down(e)
            raise ClusterUnavailable(f"the cluster registry (Redis) is unavailable: {e}") from e
        return {n: int(count) for n, count in zip(node_ids, answers[1::2])}

    async def place(self, node_id: str, secs: float, now: int | None = None) -> None:
        """Count one session placed on `node_id` for `secs` (a sliding window: each placement
        ages out on its own)."""
        now = now_ms() if now is None else now
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key("placed", node_id), {uuid.uuid4().hex: now})
                pipe.pexpire(key("placed", node_id), int(secs * 1000))
                await pipe.execute()
        except (RedisError, OSError) as e:
            self._down(e)

    async def nodes(self) -> list[dict]:
        """Every live node (its entry not expired), by id."""
        return sorted(await self._read("node"), key=lambda n: n["id"])

    async def sessions(self) -> list[dict]:
        """Every node's live sessions: this node's from memory, the others' from Redis."""
        local = [self.session_entry(live) for live in self.registry.all()]
        remote = [e for e in await self._read("session") if e.get("node") != self.id]
        return local + sorted(remote, key=lambda e: e["started_at"])

    # --- events ---------------------------------------------------------------------------
    def _on_session_event(self, event: str, live: LiveSession, payload: Any) -> None:
        # While Redis is away nothing piles up: the heartbeat that finds it back rewrites
        # every live entry (and an ended session's expires).
        if event not in DASHBOARD_EVENTS or not self._healthy:
            return
        entry = self.session_entry(live)
        session_key, turns_key = key("session", live.id), key("turns", live.id)
        if event == "started":
            data = {"session": {**entry, "history": list(live.history)}}
        elif event == "turn":
            data = {"session": entry, "turn": {**payload, "transport": live.transport}}
        else:
            data = {"session": entry}
        message = json.dumps({"node": self.id, "event": DASHBOARD_EVENTS[event], "data": data})
        # A session starting or ending changes this node's load: placement sees it at once.
        node = json.dumps(self.node_entry()) if event in ("started", "ended") else None

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                if event == "ended":
                    pipe.delete(session_key, turns_key)
                    pipe.zrem(index("session"), live.id)
                else:  # the entry and its index expire together
                    pipe.set(session_key, json.dumps(entry), px=self._ttl_ms())
                    pipe.zadd(index("session"), {live.id: now_ms() + self._ttl_ms()})
                if event == "turn":
                    pipe.rpush(turns_key, json.dumps(payload))
                    pipe.ltrim(turns_key, -self.history_turns, -1)
                    pipe.pexpire(turns_key, self._ttl_ms())
                if node is not None:
                    self._put_node(pipe, node)
                pipe.publish(EVENTS_CHANNEL, message)
                await pipe.execute()

        self._outbox.put_nowait(write)

    async def _write(self) -> None:
        """Writes in the order the sessions' events happened (an end is never overtaken)."""
        while True:
            write = await self._outbox.get()
            try:
                await write()
                self._up()
            except (RedisError, OSError) as e:
                self._down(e)

    def _on_remote_event(self, message: dict) -> None:
        if message.get("node") == self.id:
            return
        event, data = message["event"], message["data"]
        session = data["session"]
        if event == "session-ended":
            self.remote_sessions.pop(session["id"], None)
        elif event == "session-started":
            self.remote_sessions[session["id"]] = session
        else:
            known = self.remote_sessions.setdefault(session["id"], {**session, "history": []})
            known.update(session)
            if event == "turn":
                known["history"] = (known["history"] + [data["turn"]])[-self.history_turns :]
        self.remote_event(event, data)

    # --- the subscriptions: other nodes' events, calls to this node, replies to its calls ---
    async def _listen(self) -> None:
        calls, replies = key("calls", self.id), key("replies", self.id)
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(EVENTS_CHANNEL, calls, replies)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        body = json.loads(message["data"])
                        if message["channel"] == EVENTS_CHANNEL:
                            self._on_remote_event(body)
                        elif message["channel"] == calls:
                            self._spawn(self.steering.answer(body))
                        elif message["channel"] == replies:
                            self.steering.replied(body)
                    except (ValueError, KeyError, TypeError):
                        logger.warning(
                            f"Cluster: ignored a malformed message on {message['channel']}"
                        )
            except (RedisError, OSError) as e:
                self._down(e)
            finally:
                self._subscribed.clear()
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(RECONNECT_SECS)

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def owner_of(self, session_id: str) -> str | None:
        try:
            raw = await self._redis.get(key("session", session_id))
        except (RedisError, OSError) as e:
            self._down(e)
            raise ClusterUnavailable(f"the cluster registry (Redis) is unavailable: {e}") from e
        return json.loads(raw)["node"] if raw else None

    async def call(
        self, node: str, method: str, path: str, body: Any = None, client: str | None = None
    ) -> tuple[int, Any]:
        """Have `node` answer a request (for `client`'s address); its (status, JSON body)."""
        return await self.steering.call(node, method, path, body, client)
