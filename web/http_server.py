"""How the app is served: one uvicorn configuration for `python -m bot serve`, the session
processes and the tests.

- HTTP/1.1 by h11 with a deadline on each request's headers (REQUEST_HEADER_TIMEOUT_SECS,
  counted from the connection, or from the first byte of the next request on a kept-alive
  one): uvicorn times out idle kept-alive connections but not a client that sends its
  headers a byte at a time, or nothing at all (slow-loris).
- X-Forwarded-For is believed only from TRUSTED_PROXIES (uvicorn's proxy-headers support,
  which otherwise trusts 127.0.0.1); the client address it yields is what the admin API's
  loopback rule and the per-client limits see.
- Logging is left to bot/logs.py (`log_config=None`): uvicorn's errors and tracebacks go
  through the JSON log and its redaction.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bot.config import Settings

WEBSOCKET_QUEUE = 16  # messages uvicorn holds for a WebSocket that its app has not read yet


class HeaderDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are too slow."""

    header_timeout_secs = 10.0  # set per server by `server_config`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # still waiting for a request line and headers
            if data:
                self._arm_header_deadline()
        else:
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Keep-alive: uvicorn's own timer ends an idle connection; ours restarts with the
        # next request's first byte.
        self._disarm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(
                self.header_timeout_secs, self._headers_too_slow
            )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()


def server_config(
    app: Any,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    **overrides: Any,
) -> uvicorn.Config:
    protocol = type(
        "HeaderDeadlineProtocol",
        (HeaderDeadlineH11Protocol,),
        {"header_timeout_secs": settings.request_header_timeout_secs},
    )
    proxies = settings.trusted_proxy_list
    options: dict[str, Any] = dict(
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        http=protocol,
        ws_max_size=settings.max_message_bytes,
        ws_max_queue=WEBSOCKET_QUEUE,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or "",
        server_header=False,
        log_config=None,
        log_level="warning",
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)


def loopback_socket() -> socket.socket:
    """A socket bound to a free loopback port (a session process's and the tests' servers)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock
