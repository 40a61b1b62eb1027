"""Steering calls between nodes over Redis pub/sub: a node asks the node that owns a
session to answer a request (`call`), and answers the calls other nodes send it (`answer`)
with its own routes (web/cluster/calls.py's in-process dispatch). Calls reach a node on its
`calls` channel and come back on the caller's `replies` channel (web/cluster/keys.py); the
node's one subscriber (web/cluster/node.py) hands them here."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis
from loguru import logger
from redis.exceptions import RedisError

from web.cluster.keys import key

# A busy Redis (or host) is not a dead one: reads wait this long before the registry says 503.
REDIS_TIMEOUT_SECS = 5.0
# What another node may ask this one to answer: steering its sessions, starting a Daily bot.
CALLABLE = (
    ("GET", "/api/sessions/"),
    ("PUT", "/api/sessions/"),
    ("POST", "/api/sessions/"),
    ("DELETE", "/api/sessions/"),
    ("POST", "/api/rooms"),
)


class ClusterUnavailable(RuntimeError):
    """Redis cannot be reached: the cluster-wide view is unavailable for now."""


class OwnerTimeout(RuntimeError):
    """The node owning a session did not answer a call in time."""


class SteeringCalls:
    def __init__(
        self,
        node_id: str,
        store: redis.Redis,
        subscribed: asyncio.Event,
        dispatch: Callable[..., Awaitable[tuple[int, Any]]],
        timeout_secs: float,
        *,
        on_redis_error: Callable[[Exception], None],
    ):
        self._id = node_id
        self._redis = store
        self._subscribed = subscribed  # set while this node hears its replies
        self._dispatch = dispatch
        self._timeout = timeout_secs
        self._on_redis_error = on_redis_error
        self._pending: dict[str, asyncio.Future] = {}

    def replied(self, reply: dict) -> None:
        """A reply to one of this node's calls (from its `replies` channel)."""
        future = self._pending.get(reply.get("call"))
        if future is not None and not future.done():
            future.set_result(reply)

    async def answer(self, call: dict) -> None:
        """Answer another node's call with this node's own route; the reply always goes back."""
        try:
            method, path = call["method"], call["path"]
            if not any(method == m and path.startswith(p) for m, p in CALLABLE):
                status, body = 403, {"detail": f"{method} {path} is not callable across nodes"}
            else:
                # A room is admitted under its client's own per-client limits.
                client = call.get("client") if path.startswith("/api/rooms") else None
                status, body = await self._dispatch(method, path, call.get("json"), client)
        except Exception as e:  # the answer must go back whatever happened
            logger.exception("Cluster: a steering call failed on this node")
            status, body = 500, {"detail": f"node {self._id!r} failed to answer: {e}"}
        reply = json.dumps({"call": call["call"], "status": status, "body": body, "node": self._id})
        try:
            await self._redis.publish(key("replies", call["from"]), reply)
        except (RedisError, OSError) as e:
            self._on_redis_error(e)

    async def call(
        self, node: str, method: str, path: str, body: Any = None, client: str | None = None
    ) -> tuple[int, Any]:
        """Have `node` answer a request (for `client`'s address); its (status, JSON body)."""
        call_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        message = {
            "call": call_id,
            "from": self._id,
            "method": method,
            "path": path,
            "json": body,
            "client": client,
        }
        try:
            try:  # just reconnecting: a moment for this node to hear its replies again
                await asyncio.wait_for(self._subscribed.wait(), REDIS_TIMEOUT_SECS)
            except TimeoutError:
                raise ClusterUnavailable(
                    "this node is not connected to the cluster (Redis)"
                ) from None
            try:
                listeners = await self._redis.publish(key("calls", node), json.dumps(message))
            except (RedisError, OSError) as e:
                self._on_redis_error(e)
                raise ClusterUnavailable(f"the cluster (Redis) is unavailable: {e}") from e
            if not listeners:
                raise OwnerTimeout(f"node {node!r} is not listening (it may have just died)")
            try:
                reply = await asyncio.wait_for(future, self._timeout)
            except TimeoutError:
                raise OwnerTimeout(
                    f"node {node!r} did not answer within {self._timeout:g} s"
                ) from None
            return reply["status"], reply["body"]
        finally:
            self._pending.pop(call_id, None)
