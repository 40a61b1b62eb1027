"""HTTP hygiene in front of the app (pure ASGI middleware):

- `RequestBodyLimits`: a body over MAX_REQUEST_BYTES is refused with 413 (from its
  Content-Length, or as it streams in), and a body that is not all there within
  REQUEST_BODY_TIMEOUT_SECS with 408, before any route reads it.
- `AllowedMethods`: a request with a method an API path does not serve gets 405 with
  `Allow` listing the methods it does; `OPTIONS` gets 204 with the same `Allow`. (The
  catch-all static mount would otherwise answer both for every API path, wrongly.)

The headers' own deadline is the server's: web/http_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = {"POST", "PUT", "PATCH"}
# What every route with a body may answer because of this module or of FastAPI's parsing.
BODY_RESPONSES: dict[int | str, dict] = {
    400: {"description": "The body is not JSON (e.g. not UTF-8)"},
    408: {"description": "The body did not arrive in time (REQUEST_BODY_TIMEOUT_SECS)"},
    413: {"description": "The body is over MAX_REQUEST_BYTES"},
}
HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"}
# After a 413, what is still read of the refused body before the connection closes.
DRAIN_BYTES, DRAIN_SECS = 8 * 1024 * 1024, 2.0


class _BodyRefused(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


class RequestBodyLimits:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_secs: float):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout_secs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        too_big = _BodyRefused(
            413, f"the request body is over {self.max_bytes} bytes (MAX_REQUEST_BYTES)"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _refuse(
                too_big if length.isdigit() else _BodyRefused(400, "bad Content-Length"),
                scope,
                receive,
                send,
            )
            return
        # Read the whole body first, within the deadline and the size; the app then gets it.
        deadline = asyncio.get_running_loop().time() + self.timeout
        chunks, size, more = [], 0, True
        try:
            while more:
                left = deadline - asyncio.get_running_loop().time()
                try:
                    message = await asyncio.wait_for(receive(), max(left, 0.001))
                except TimeoutError:
                    raise _BodyRefused(
                        408, f"the request body did not arrive within {self.timeout:g} s"
                    ) from None
                if message["type"] == "http.disconnect":
                    return
                body = message.get("body", b"")
                size += len(body)
                if size > self.max_bytes:
                    raise too_big
                chunks.append(body)
                more = message.get("more_body", False)
        except _BodyRefused as refusal:
            await _refuse(refusal, scope, receive, send)
            return
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: a disconnect, when it comes

    return replay


async def _refuse(refusal: _BodyRefused, scope: Scope, receive: Receive, send: Send) -> None:
    if refusal.status == 413:
        await _drain(receive)
    response = JSONResponse(
        {"detail": refusal.detail}, refusal.status, headers={"Connection": "close"}
    )
    await response(scope, receive, send)


async def _drain(receive: Receive) -> None:
    """Read (and drop) what the client is still sending of a refused body, for a moment, so
    that it then reads the refusal instead of a reset connection."""
    loop = asyncio.get_running_loop()
    deadline, left = loop.time() + DRAIN_SECS, DRAIN_BYTES
    with contextlib.suppress(TimeoutError):
        while left > 0:
            message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            left -= len(message.get("body", b""))


class AllowedMethods:
    """405 (and 204 for OPTIONS) with the right `Allow`, for the API's paths: those of the
    app's OpenAPI schema, read at the first request, when every route is in place."""

    def __init__(self, app: ASGIApp, schema: Callable[[], dict]):
        self.app = app
        self._schema = schema
        self._paths: list[tuple[re.Pattern, set[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed = self._methods(scope["path"])
            if allowed and scope["method"] not in allowed:
                allow = ", ".join(sorted(allowed | {"OPTIONS"}))
                if scope["method"] == "OPTIONS":
                    response: Response = Response(status_code=204, headers={"Allow": allow})
                else:
                    response = JSONResponse(
                        {"detail": "Method Not Allowed"}, 405, headers={"Allow": allow}
                    )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _methods(self, path: str) -> set[str]:
        if self._paths is None:
            self._paths = []
            for template, item in self._schema().get("paths", {}).items():
                parts = re.split(r"(\{[^}/]+\})", template)
                pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
                methods = {m.upper() for m in item if m.upper() in HTTP_METHODS}
                if "GET" in methods:
                    methods.add("HEAD")
                self._paths.append((re.compile(f"^{pattern}$"), methods))
        for pattern, methods in self._paths:
            if pattern.match(path):
                return methods
        return set()
