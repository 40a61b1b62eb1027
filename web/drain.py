"""Draining on SIGTERM: the server takes no new sessions (MAX_SESSIONS-style refusals with
the reason; in cluster mode its node is marked draining, so /api/connect places elsewhere),
lets its live sessions finish up to DRAIN_GRACE_SECS, then exits."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from loguru import logger


async def drain(app: FastAPI, grace_secs: float) -> None:
    """Returns once no session is live, or after `grace_secs`."""
    registry, cluster = app.state.registry, app.state.cluster
    registry.draining = True
    if cluster is not None:
        cluster.draining = True
        await cluster.announce()
    idle = asyncio.Event()

    def on_session_event(event, live, payload) -> None:
        if event == "ended" and not registry.all():
            idle.set()

    registry.listeners.append(on_session_event)
    live = len(registry.all())
    logger.info(f"Draining: no new sessions; waiting up to {grace_secs:g} s for {live} live")
    if live:
        try:
            await asyncio.wait_for(idle.wait(), grace_secs)
            logger.info("Drained: every session has ended")
        except TimeoutError:
            logger.warning(
                f"Drain grace ({grace_secs:g} s) is over: ending "
                f"{len(registry.all())} live sessions"
            )
    registry.listeners.remove(on_session_event)
