"""Who may open a session: the page's origin, then a slot under the server's and the client's
limits. Every endpoint that starts a session (/ws, /api/offer, /api/rooms) goes through here.

- Origin: a browser names the page that opens a WebSocket or sends a request (`Origin`). The
  server's own pages are always allowed, other pages only if ALLOWED_ORIGINS lists them (or
  is `*`). A request without `Origin` is not from a web page (a program may send any header
  it likes, so refusing it would protect nothing) and is allowed.
- Limits: MAX_SESSIONS (503 / WebSocket 1013), then the client address's own limits
  (MAX_SESSIONS_PER_CLIENT, MAX_NEW_SESSIONS_PER_MINUTE: 429 / 1013), each with the reason.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import HTTPException, WebSocket, status
from loguru import logger
from pipecat.utils.security.allowed_origins import is_origin_allowed
from starlette.requests import HTTPConnection

from bot.config import Settings
from bot.logs import ThrottledLog
from web.sessions import ClientLimitError, SessionLimitError, SessionRegistry, Slot

CLOSE_TRY_AGAIN_LATER = 1013
REFUSAL_LOG_SECS = 10.0
# What a route that starts sessions may answer because of this module.
ADMISSION_RESPONSES: dict[int | str, dict] = {
    403: {"description": "The page's origin may not open sessions (ALLOWED_ORIGINS)"},
    429: {"description": "This client is at its session limits (the reason; Retry-After)"},
    503: {"description": "The server is at MAX_SESSIONS (the reason; Retry-After)"},
}


def client_address(connection: HTTPConnection) -> str:
    """The client's address: the TCP peer, or whom a trusted proxy names (TRUSTED_PROXIES)."""
    return connection.client.host if connection.client else ""


class OriginPolicy:
    def __init__(self, allowed: list[str]):
        self.any = "*" in allowed
        self.allowed = [o.lower() for o in allowed if o != "*"]

    def allows(self, connection: HTTPConnection) -> bool:
        origin = connection.headers.get("origin")
        if origin is None or self.any:
            return True
        origin = origin.strip().rstrip("/").lower()
        if self.allowed and is_origin_allowed(origin, self.allowed):
            return True
        # The server's own page: the origin names the host the request was sent to.
        parts = urlsplit(origin)
        host = connection.headers.get("host", "").lower()
        return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host


class Admission:
    def __init__(self, settings: Settings, registry: SessionRegistry):
        self.registry = registry
        self.origins = OriginPolicy(settings.origin_list)
        self.trusts_proxies = bool(settings.trusted_proxy_list)
        # A client refused over and over must not flood the log.
        self._refusals = ThrottledLog(REFUSAL_LOG_SECS)
        self._untrusted_forwarding = ThrottledLog(REFUSAL_LOG_SECS * 30)

    def client(self, connection: HTTPConnection) -> str:
        if not self.trusts_proxies and "x-forwarded-for" in connection.headers:
            self._untrusted_forwarding(
                "A request came with X-Forwarded-For, which is ignored: every client behind a "
                "proxy counts as the proxy's address until TRUSTED_PROXIES names it"
            )
        return client_address(connection)

    # --- HTTP (/api/offer, /api/rooms) -------------------------------------------------------
    def check_origin(self, request: HTTPConnection) -> None:
        if not self.origins.allows(request):
            origin = request.headers.get("origin", "")
            self._refusals(f"Refused a session from the page {origin[:100]!r} (ALLOWED_ORIGINS)")
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"pages from {origin[:100]!r} may not open sessions here (ALLOWED_ORIGINS)",
            )

    def slot(self, request: HTTPConnection, what: str) -> Slot:
        """A slot for a new session, or the HTTP refusal (503, 429) with the reason."""
        client = self.client(request)
        try:
            return self.registry.reserve(client)
        except SessionLimitError as e:
            self._refusals(f"Refused a {what} session: {e}")
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, str(e), headers={"Retry-After": "5"}
            ) from e
        except ClientLimitError as e:
            self._refusals(f"Refused a {what} session from {client}: {e}")
            retry = self.registry.clients.retry_after(client) if self.registry.clients else 1
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS, str(e), headers={"Retry-After": str(retry)}
            ) from e

    # --- WebSocket (/ws) ---------------------------------------------------------------------
    async def websocket(self, websocket: WebSocket) -> Slot | None:
        """Accept the socket with a slot, or refuse it: a page from a foreign origin before
        the handshake completes (HTTP 403), a full server or client with 1013 and the reason."""
        if not self.origins.allows(websocket):
            origin = websocket.headers.get("origin", "")
            self._refusals(f"Refused a WebSocket from the page {origin[:100]!r} (ALLOWED_ORIGINS)")
            await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
            return None
        await websocket.accept()
        client = self.client(websocket)
        try:
            return self.registry.reserve(client)
        except (SessionLimitError, ClientLimitError) as e:
            self._refusals(f"Refused a WebSocket session from {client}: {e}")
            await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason=str(e)[:120])
            return None


def log_origin_policy(settings: Settings) -> None:
    allowed = settings.origin_list
    if "*" in allowed:
        logger.warning("ALLOWED_ORIGINS=*: any web page may open sessions on this server")
    elif allowed:
        logger.info(f"Sessions may be opened by this server's pages and {', '.join(allowed)}")
