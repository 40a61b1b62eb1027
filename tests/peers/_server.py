"""The loopback server every peer is built on: aiohttp on 127.0.0.1, an ephemeral port.

A peer is an async context manager::

    async with GroqPeer(api_key="k") as peer:
        peer.base_url   # http://127.0.0.1:<port>
        peer.ws_url     # ws://127.0.0.1:<port>

It records what it received (`requests`, and per-protocol records in each peer) and lets
a test wait for a condition on them with a bounded, explained timeout (`wait_for`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.peers.faults import Fault, Faults, FaultSpec, malformed_payload


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None  # parsed JSON when the body was JSON, else the raw text
    at: float = field(default_factory=time.monotonic)


class PeerServer:
    """Base of every protocol peer (see the module docstring)."""

    name = "peer"

    def __init__(self, *, api_key: str | None = None):
        # None accepts any credentials; a string accepts only that key.
        self.api_key = api_key
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.port = 0
        self.app = web.Application()
        self.setup_routes(self.app)

    # --- lifecycle ------------------------------------------------------------------------

    def setup_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()

    async def start(self) -> None:
        self._cond = asyncio.Condition()
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.faults.release()
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"peer shutting down")
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # --- recording and waiting ------------------------------------------------------------

    async def changed(self) -> None:
        """Wake whoever waits in `wait_for`: call after every new record."""
        if self._cond is None:
            return
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str):
        """Wait until `predicate()` is truthy and return its value; fail clearly on timeout."""
        assert self._cond is not None, f"{self.name} peer is not started"
        deadline = time.monotonic() + timeout
        async with self._cond:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name} peer: no {what} within {timeout:.0f}s")
                try:
                    await asyncio.wait_for(self._cond.wait(), remaining)
                except TimeoutError:
                    pass
            return value

    async def record(self, request: web.Request) -> RecordedRequest:
        text = await request.text() if request.can_read_body else ""
        try:
            body: Any = json.loads(text) if text else None
        except json.JSONDecodeError:
            body = text
        rec = RecordedRequest(
            request.method, request.path, dict(request.query), dict(request.headers), body
        )
        self.requests.append(rec)
        await self.changed()
        return rec

    # --- auth -----------------------------------------------------------------------------

    def key_ok(self, presented: str | None) -> bool:
        return self.api_key is None or presented == self.api_key

    @staticmethod
    def bearer(request: web.Request, scheme: str = "Bearer") -> str | None:
        auth = request.headers.get("Authorization", "")
        prefix = f"{scheme} "
        return auth[len(prefix) :] if auth.startswith(prefix) else None

    # --- HTTP faults ----------------------------------------------------------------------

    def error_body(self, status: int, message: str) -> dict:
        """The provider's JSON error body; peers override it with their documented shape."""
        return {"error": {"message": message, "code": status}}

    def error_response(self, status: int, message: str, headers: dict | None = None):
        return web.json_response(self.error_body(status, message), status=status, headers=headers)

    async def http_fault(self, request: web.Request) -> tuple[FaultSpec | None, Any]:
        """Take the request's fault; apply what happens before the response starts.

        Returns (spec, response): a response to return at once (429/500, or after a hang
        is released), or None to go on with `spec` (None or a streaming fault) in hand.
        """
        spec = self.faults.take(request.path)
        if spec is None:
            return None, None
        if spec.status:
            headers = {}
            if spec.kind is Fault.HTTP_429 and spec.retry_after is not None:
                headers["Retry-After"] = f"{spec.retry_after:g}"
            return spec, self.error_response(
                spec.status, f"injected fault: HTTP {spec.status}", headers
            )
        if spec.kind is Fault.HANG:
            await self.faults.hang()
            return spec, self.abort(request)
        if spec.kind is Fault.SLOW_FIRST_BYTE:
            await self.faults.sleep(spec.seconds)
            return spec, None
        if spec.kind is Fault.DISCONNECT and spec.after == 0:
            return spec, self.abort(request)
        return spec, None

    @staticmethod
    def abort(request: web.Request) -> web.Response:
        """Drop the connection without an HTTP response."""
        if request.transport:
            request.transport.abort()
        return web.Response(status=499)  # never reaches the client

    # --- WebSocket helpers ----------------------------------------------------------------

    async def ws_handshake_fault(self, request: web.Request) -> tuple[FaultSpec | None, Any]:
        """Take the connection's fault; apply the ones that act on the upgrade."""
        spec = self.faults.take(f"ws:{request.path}")
        if spec is None:
            return None, None
        if spec.status:
            return spec, self.error_response(spec.status, f"injected fault: HTTP {spec.status}")
        if spec.stage == "handshake" and spec.kind is Fault.HANG:
            await self.faults.hang()
            return spec, self.abort(request)
        if spec.stage == "handshake" and spec.kind is Fault.SLOW_FIRST_BYTE:
            await self.faults.sleep(spec.seconds)
        return spec, None

    async def accept_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        return ws

    def forget_ws(self, ws: web.WebSocketResponse) -> None:
        self._sockets.discard(ws)


class FaultyStream:
    """Outgoing messages of one WebSocket connection, with its streaming fault applied."""

    def __init__(self, peer: PeerServer, ws: web.WebSocketResponse, request, spec, wrong_shape):
        self.peer = peer
        self.ws = ws
        self.request = request
        streaming = spec is not None and (
            spec.kind in (Fault.DISCONNECT, Fault.MALFORMED)
            or (spec.kind in (Fault.HANG, Fault.SLOW_FIRST_BYTE) and spec.stage == "stream")
        )
        self.spec = spec if streaming else None
        self.wrong_shape = wrong_shape
        self.sent = 0
        self.dropped = False  # the connection was cut by a DISCONNECT fault
        self.lock = asyncio.Lock()

    @property
    def open(self) -> bool:
        return not self.ws.closed and not self.dropped

    async def send(self, payload: dict) -> bool:
        """Send one JSON message; whether anything went out (False once the connection is
        gone, or while a HANG fault swallows every message)."""
        async with self.lock:
            if not self.open:
                return False
            spec = self.spec
            text = json.dumps(payload)
            if spec is not None:
                if spec.kind is Fault.HANG:
                    return False  # swallowed: the peer never answers
                if spec.kind is Fault.SLOW_FIRST_BYTE and self.sent == 0:
                    await self.peer.faults.sleep(spec.seconds)
                if spec.kind is Fault.DISCONNECT and self.sent >= spec.after:
                    self.dropped = True
                    if self.request.transport:
                        self.request.transport.abort()
                    return False
                if spec.kind is Fault.MALFORMED and self.sent == spec.after:
                    text = malformed_payload(spec.variant, self.wrong_shape)
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
            self.sent += 1
            return True


def ws_text(msg) -> str | None:
    return msg.data if msg.type == WSMsgType.TEXT else None
