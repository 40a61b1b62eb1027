"""Fault injection shared by every protocol peer.

A test arms a fault before (or during) a run::

    peer.faults.inject(Fault.HTTP_500)                   # every request / connection
    peer.faults.inject(Fault.HTTP_429, times=1)          # only the next one
    peer.faults.inject(Fault.SLOW_FIRST_BYTE, seconds=3)
    peer.faults.inject(Fault.DISCONNECT, after=2)        # drop the socket after 2 chunks
    peer.faults.inject(Fault.MALFORMED, variant="schema")
    peer.faults.inject(Fault.HANG)                       # accept, never answer

Each request (HTTP) or connection (WebSocket) takes at most one armed fault when it
starts, so `times=1` means "the next request/connection only". On the wire:

- HTTP_429 / HTTP_432 / HTTP_433 / HTTP_500: HTTP peers answer that status with the
  provider's error body (429 with `Retry-After: retry_after`, seconds as real providers
  send); WebSocket peers refuse the upgrade with it.
- SLOW_FIRST_BYTE: HTTP response headers wait `seconds`; on a WebSocket the first
  message waits `seconds` (`stage="handshake"`: the upgrade answer waits).
- DISCONNECT: the TCP connection is dropped (no close frame, no final chunk) after
  `after` stream chunks / messages; 0 on HTTP: before any byte of the response.
- MALFORMED: chunk, body or message number `after` is invalid JSON (`variant="json"`)
  or valid JSON of a shape the provider never sends (`variant="schema"`).
- HANG: the request is read and never answered; the socket is accepted and never
  answered (`stage="handshake"`: the upgrade is never answered).

A peer that shuts down releases every hung or sleeping handler, so fixtures never wait on
a fault.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from enum import StrEnum


class Fault(StrEnum):
    SLOW_FIRST_BYTE = "slow_first_byte"
    DISCONNECT = "disconnect"
    HTTP_429 = "http_429"
    HTTP_432 = "http_432"  # Tavily: the plan's usage limit
    HTTP_433 = "http_433"  # Tavily: the pay-as-you-go limit
    HTTP_500 = "http_500"
    MALFORMED = "malformed"
    HANG = "hang"


HTTP_STATUS = {Fault.HTTP_429: 429, Fault.HTTP_432: 432, Fault.HTTP_433: 433, Fault.HTTP_500: 500}


@dataclass
class FaultSpec:
    kind: Fault
    seconds: float = 0.0
    after: int = 0
    variant: str = "json"  # MALFORMED: "json" (unparsable) or "schema" (parsable, wrong shape)
    stage: str = "stream"  # WebSocket SLOW_FIRST_BYTE / HANG: "stream" or "handshake"
    times: int | None = None  # how many requests/connections it applies to; None: all
    # HTTP_429: the Retry-After header (seconds; providers say seconds, not 0); None: absent
    retry_after: float | None = 7.0

    @property
    def status(self) -> int | None:
        return HTTP_STATUS.get(self.kind)


@dataclass
class Fired:
    kind: Fault
    where: str  # the path (HTTP) or "ws:<path>" the fault was applied to


@dataclass
class Faults:
    """The armed faults of one peer, and a record of the ones that fired."""

    armed: list[FaultSpec] = field(default_factory=list)
    fired: list[Fired] = field(default_factory=list)
    _released: asyncio.Event | None = None

    def inject(self, kind: Fault, **options) -> FaultSpec:
        spec = FaultSpec(Fault(kind), **options)
        if spec.stage not in ("stream", "handshake"):
            raise ValueError(f"unknown stage {spec.stage!r}")
        if spec.variant not in ("json", "schema"):
            raise ValueError(f"unknown malformed variant {spec.variant!r}")
        self.armed.append(spec)
        return spec

    def clear(self) -> None:
        self.armed.clear()

    def take(self, where: str) -> FaultSpec | None:
        """The fault for a request/connection that starts now, if one is armed."""
        for spec in self.armed:
            if spec.times is not None:
                spec.times -= 1
                if spec.times <= 0:
                    self.armed.remove(spec)
            self.fired.append(Fired(spec.kind, where))
            return spec
        return None

    def count(self, kind: Fault) -> int:
        return sum(1 for f in self.fired if f.kind is kind)

    # --- waiting that a closing peer can cut short --------------------------------------

    @property
    def released(self) -> asyncio.Event:
        if self._released is None:
            self._released = asyncio.Event()
        return self._released

    async def hang(self) -> None:
        """Wait until the peer shuts down (or `release()`)."""
        await self.released.wait()

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the peer shuts down meanwhile."""
        try:
            await asyncio.wait_for(self.released.wait(), seconds)
        except TimeoutError:
            pass

    def release(self) -> None:
        self.released.set()


def malformed_payload(variant: str, wrong_shape: dict) -> str:
    """A message that is not valid JSON (`json`), or `wrong_shape` (`schema`): valid JSON
    of a shape the provider never sends, chosen by each peer."""
    if variant == "json":
        return json.dumps(wrong_shape)[:-7]  # cut mid-token: unparsable
    return json.dumps(wrong_shape)
