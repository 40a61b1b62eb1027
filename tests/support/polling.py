"""Waiting for a condition of a running system, without fixed sleeps: the first truth wins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """`predicate()`'s first truthy value within `timeout` seconds, else its last (falsy) one."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)
    return value


async def until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
) -> Any:
    """`predicate()`'s first truthy value; fails the test naming `what` after `timeout` s."""
    value = await poll(predicate, timeout, interval)
    if not value:
        raise AssertionError(f"timed out waiting for {what} ({timeout:g} s)")
    return value


def until_sync(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
    details: Callable[[], str] | None = None,
) -> Any:
    """`until` for a blocking caller (a fixture, a worker thread, a subprocess's start): sleeps
    between tries. On timeout the failure names `what` and adds `details()` (a log's tail)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            extra = f":\n{details()}" if details else ""
            raise AssertionError(f"timed out waiting for {what} ({timeout:g} s){extra}")
        time.sleep(interval)
    return value


async def until_async(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """`until` for a coroutine predicate (a query to a server in this event loop, Redis)."""
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({timeout:g} s)")
        await asyncio.sleep(interval)
    return value
