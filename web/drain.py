"""Draining on SIGTERM: the server takes no new sessions (MAX_SESSIONS-style refusals with
the reason; in cluster mode its node is marked draining, so /api/connect places elsewhere),
lets its live sessions finish up to DRAIN_GRACE_SECS, then ends those left (their clients told
why: a WebSocket closes with 1012, on which the browser client resumes the conversation
elsewhere) and exits."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from loguru import logger

from transports.websocket import SHUTTING_DOWN
from web.sessions import LiveSession

# How long a session ended at the grace's end has to finish before the server exits anyway.
END_SECS = 5.0


async def drain(app: FastAPI, grace_secs: float) -> None:
    """Returns once no session is live, or after `grace_secs` and ending those left."""
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
            left = registry.all()
            logger.warning(
                f"Drain grace ({grace_secs:g} s) is over: ending {len(left)} live sessions"
            )
            reason = f"{SHUTTING_DOWN} (its DRAIN_GRACE_SECS, {grace_secs:g} s, are over)"
            await asyncio.gather(*(_end(session, reason) for session in left))
    registry.listeners.remove(on_session_event)


async def _end(live: LiveSession, reason: str) -> None:
    """End `live` gracefully, its client told `reason`; the server's exit does the rest."""
    try:
        if live.control is not None:
            await live.control.end(reason)
    except Exception as e:  # e.g. its session process is already on its way out
        logger.bind(session_id=live.id).warning(f"Could not end the session: {e}")
    if live.task is not None:
        await asyncio.wait({live.task}, timeout=END_SECS)
