"""Per-client session limits: how many live sessions one client address may hold, and how
many new ones it may open per minute (MAX_SESSIONS_PER_CLIENT, MAX_NEW_SESSIONS_PER_MINUTE).

The address is the TCP peer, or the client a trusted proxy names in X-Forwarded-For
(TRUSTED_PROXIES; uvicorn rewrites the peer address, web/http_server.py).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable

WINDOW_SECS = 60.0


class ClientLimitError(RuntimeError):
    """This client already holds, or has just opened, as many sessions as it may."""


class ClientLimits:
    def __init__(
        self,
        max_live: int,
        max_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_live = max_live  # 0: no limit
        self.max_per_minute = max_per_minute  # 0: no limit
        self._clock = clock
        self._live: Counter[str] = Counter()
        self._opened: dict[str, deque[float]] = {}

    def admit(self, client: str) -> None:
        """Count a new session for `client`, or raise `ClientLimitError` with the reason."""
        if self.max_live and self._live[client] >= self.max_live:
            raise ClientLimitError(
                f"This client already has {self.max_live} live sessions "
                "(MAX_SESSIONS_PER_CLIENT); end one first."
            )
        now = self._clock()
        opened = self._opened.setdefault(client, deque())
        while opened and now - opened[0] >= WINDOW_SECS:
            opened.popleft()
        if self.max_per_minute and len(opened) >= self.max_per_minute:
            wait = WINDOW_SECS - (now - opened[0])
            raise ClientLimitError(
                f"This client opened {self.max_per_minute} sessions in the last minute "
                f"(MAX_NEW_SESSIONS_PER_MINUTE); try again in {wait:.0f} s."
            )
        opened.append(now)
        self._live[client] += 1
        self._forget_idle(now)

    def release(self, client: str) -> None:
        self._live[client] -= 1
        if self._live[client] <= 0:
            del self._live[client]

    def retry_after(self, client: str) -> int:
        """Seconds until `client` may open a session again as far as the rate goes."""
        opened = self._opened.get(client)
        if not opened or not self.max_per_minute or len(opened) < self.max_per_minute:
            return 1
        return max(1, round(WINDOW_SECS - (self._clock() - opened[0])))

    def _forget_idle(self, now: float) -> None:
        # Addresses with nothing live and nothing in the window are dropped, so the table
        # holds only the last minute's clients.
        for client in [c for c, t in self._opened.items() if t and now - t[-1] >= WINDOW_SECS]:
            if not self._live[client]:
                del self._opened[client]
