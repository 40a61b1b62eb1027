"""Steering calls between nodes: an admin request for a session of another node is
answered by that node's own route, run in-process on the request the caller forwarded over
Redis (`ClusterNode.call`), so the answer (and any error) is exactly what the owner would
have said to a client of its own."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse

from bot.config import Settings
from web.cluster.node import ClusterNode
from web.cluster.steering import ClusterUnavailable, OwnerTimeout


async def forward(
    cluster: ClusterNode, session_id: str, method: str, path: str, body: Any = None
) -> JSONResponse | None:
    """The owning node's answer to an admin request for `session_id`; None when no other
    node owns it (the caller answers itself: 404). 503 while Redis is unavailable, 504 if
    the owner does not answer."""
    try:
        owner = await cluster.owner_of(session_id)
        if owner is None or owner == cluster.id:
            return None
        status, answer = await cluster.call(owner, method, path, body)
    except ClusterUnavailable as e:
        return JSONResponse({"detail": str(e)}, status_code=503)
    except OwnerTimeout as e:
        return JSONResponse({"detail": f"session {session_id!r}: {e}"}, status_code=504)
    return JSONResponse(answer, status_code=status)


# Marks the requests a node dispatches to its own routes, with a secret of its process: a
# room asked for this way (placed on this node) is made here, not placed again.
DISPATCHED_HEADER = "X-Node-Dispatch"


class InProcessDispatch:
    """Answer a forwarded request with this node's own routes: an admin request as a loopback
    client (with ADMIN_TOKEN, if one is set), a room for its client's address."""

    def __init__(self, app, settings: Settings):
        self._app = app
        self._secret = secrets.token_urlsafe(16)
        self._headers = {DISPATCHED_HEADER: self._secret}
        if settings.admin_token and settings.admin_token.get_secret_value():
            self._headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"

    async def __call__(
        self, method: str, path: str, body: Any, client: str | None = None
    ) -> tuple[int, Any]:
        transport = httpx.ASGITransport(app=self._app, client=(client or "127.0.0.1", 0))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://node", headers=self._headers, timeout=None
        ) as http:
            response = await http.request(method, path, json=body)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"detail": response.text}

    def dispatched(self, request: Request) -> bool:
        """Whether `request` came through this dispatcher (not from a client)."""
        return hmac.compare_digest(request.headers.get(DISPATCHED_HEADER, ""), self._secret)
