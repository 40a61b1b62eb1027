"""Steering calls between nodes: an admin request for a session of another node is
answered by that node's own route, run in-process on the request the caller forwarded over
Redis (`ClusterNode.call`), so the answer (and any error) is exactly what the owner would
have said to a client of its own."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.responses import JSONResponse

from bot.config import Settings
from web.cluster.node import ClusterNode, ClusterUnavailable, OwnerTimeout


async def forward(cluster: ClusterNode, session_id: str, method: str, path: str,
                  body: Any = None) -> JSONResponse | None:
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


def in_process_dispatch(app, settings: Settings):
    """Answer a forwarded request with this node's own routes: an admin request as a loopback
    client (with ADMIN_TOKEN, if one is set), a room for its client's address."""
    headers = {}
    if settings.admin_token and settings.admin_token.get_secret_value():
        headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"

    async def dispatch(method: str, path: str, body: Any,
                       client: str | None = None) -> tuple[int, Any]:
        transport = httpx.ASGITransport(app=app, client=(client or "127.0.0.1", 0))
        async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                     headers=headers, timeout=None) as http:
            response = await http.request(method, path, json=body)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"detail": response.text}

    return dispatch
