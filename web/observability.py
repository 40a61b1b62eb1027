"""See everything: Prometheus `/metrics`, the live `/dashboard` and its event stream.

Everything here hangs off one `Observability` per app (`app.state.observability`), fed by
the app's `SessionRegistry` (session started / state / turn / ended) and by a
`ProviderErrorObserver` in every session's pipeline:

* `/metrics` — the app's own `CollectorRegistry` (never the process-wide default, so
  several apps in one process do not collide): a histogram per stage, voice-to-voice and
  barge-in stop; counters of sessions, turns, interruptions and provider errors; a gauge
  of live sessions. Session processes count their provider errors and fallbacks in
  prometheus-client's multiprocess files, added in here (web/process_metrics.py).
* `/api/events` — server-sent events: a `snapshot` on connect (every live session with its
  recent turns, and the recent turns across sessions behind the latency chart), then
  `session-started`, `state`, `turn` and `session-ended` as they happen.
* `/api/dashboard` — the same snapshot as JSON.
* `/dashboard` — the static page in `web/dashboard/` that draws it all.

In cluster mode (REDIS_URL) every session carries its `node`, and the snapshot and the
stream also hold the other nodes' sessions and events (relayed by web/cluster/node.py).

The two data routes carry transcripts, so they are behind the admin API's access rule
(ADMIN_TOKEN, or loopback clients only without one); the page sends the token it is given.
`/metrics` stays open: it holds counts and timings, never text.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from pathlib import Path
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from loguru import logger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bot.config import Settings
from bot.providers import ProviderNames
from processors.observers.provider_errors import ProviderErrorObserver, provider_counters
from web.admin import admin_router
from web.process_metrics import SessionProcessMetrics
from processors.observers.turn_record import STAGES
from web.sessions import LiveSession, SessionRegistry

DASHBOARD_DIR = Path(__file__).parent / "dashboard"

# Stages with their own histogram; the others share voice_agent_stage_seconds{stage=…}.
OWN_HISTOGRAMS = ("voice_to_voice", "barge_in_stop")
STAGE_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
)
VOICE_TO_VOICE_BUCKETS = (
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.8,
    1.0,
    1.25,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
)
BARGE_IN_BUCKETS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)

# An event stream ends after this long (the browser reconnects at once and gets a fresh
# snapshot), so an open dashboard never holds up a server shutdown for longer.
STREAM_SECS = 20.0
HEARTBEAT_SECS = 5.0
SUBSCRIBER_QUEUE = 1000
EVENTS = ("snapshot", "session-started", "state", "turn", "session-ended")
# One server-sent event of /api/events (Open API 3.1: the schema of a stream's event).
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": list(EVENTS)},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
}


class Metrics:
    """The app's Prometheus metrics, in a registry of its own."""

    def __init__(
        self, live_sessions=lambda: 0, session_processes: SessionProcessMetrics | None = None
    ):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage = Histogram(
            "voice_agent_stage_seconds",
            "Time spent in each stage of a turn (vad, stt, turn, llm_ttft, tool, tts_ttfb).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.voice_to_voice = Histogram(
            "voice_agent_voice_to_voice_seconds",
            "From the user stopping speaking to the bot's first audio leaving the server.",
            buckets=VOICE_TO_VOICE_BUCKETS,
            registry=r,
        )
        self.barge_in_stop = Histogram(
            "voice_agent_barge_in_stop_seconds",
            "From the user starting to speak over the bot to the bot's audio stopping.",
            buckets=BARGE_IN_BUCKETS,
            registry=r,
        )
        self.turns = Counter("voice_agent_turns", "User turns completed.", registry=r)
        self.interruptions = Counter(
            "voice_agent_interruptions", "Bot answers interrupted by the user.", registry=r
        )
        # Provider errors and fallbacks: also counted by session processes, if any.
        if session_processes is None:
            self.errors, self.fallbacks = provider_counters(r)
        else:
            self.errors, self.fallbacks = provider_counters(None)
            r.register(session_processes.counted_everywhere([self.errors, self.fallbacks]))
        self.sessions = Counter(
            "voice_agent_sessions", "Sessions started, by transport.", ["transport"], registry=r
        )
        self.live_sessions = Gauge("voice_agent_live_sessions", "Sessions live now.", registry=r)
        self.live_sessions.set_function(live_sessions)

    def observe_turn(self, record: dict) -> None:
        stages = record["stages_ms"]
        for stage in STAGES:
            if stage not in stages:
                continue
            seconds = stages[stage] / 1000.0
            if stage == "voice_to_voice":
                self.voice_to_voice.observe(seconds)
            elif stage == "barge_in_stop":
                self.barge_in_stop.observe(seconds)
            else:
                self.stage.labels(stage=stage).observe(seconds)
        self.turns.inc()
        if record.get("interrupted"):
            self.interruptions.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)

    def put(self, item: tuple[str, Any]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # Too slow a reader: end its stream; it reconnects to a fresh snapshot.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class EventHub:
    """Fan-out of dashboard events to every open event stream (never blocks a session)."""

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> _Subscriber:
        subscriber = _Subscriber()
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def publish(self, event: str, data: Any) -> None:
        for subscriber in list(self._subscribers):
            subscriber.put((event, data))


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Observability:
    """Metrics, recent turns and dashboard events for one app."""

    def __init__(
        self,
        settings: Settings,
        registry: SessionRegistry,
        session_processes: SessionProcessMetrics | None = None,
    ):
        self.settings = settings
        self.sessions = registry
        self.metrics = Metrics(lambda: len(registry.all()), session_processes)
        self.events = EventHub()
        # The recent turns across all sessions, behind the dashboard's latency chart.
        self.recent_turns: deque[dict] = deque(maxlen=settings.dashboard_chart_turns)
        try:
            self.providers: ProviderNames | None = ProviderNames.from_settings(settings)
        except ValueError:
            self.providers = None
        registry.listeners.append(self.on_session_event)
        # Cluster mode: this node's id, and the other nodes' sessions with their turns.
        self.node: str | None = None
        self.remote_sessions: Callable[[], list[dict]] = list

    def add_remote_event(self, event: str, data: dict) -> None:
        """Another node's dashboard event (cluster mode): streamed, and its turns charted."""
        if event == "turn":
            self.recent_turns.append(data["turn"])
        self.events.publish(event, data)

    def summary(self, live: LiveSession) -> dict:
        summary = live.summary()
        return summary if self.node is None else {**summary, "node": self.node}

    # --- feeds ---------------------------------------------------------------------------
    def error_observer(self) -> ProviderErrorObserver:
        return ProviderErrorObserver(self.metrics.errors, self.providers, self.metrics.fallbacks)

    def on_session_event(self, event: str, live: LiveSession, payload: Any) -> None:
        if event == "turn":
            record = {**payload}
            record["transport"] = live.transport
            self.metrics.observe_turn(record)
            self.recent_turns.append(record)
            self.events.publish("turn", {"session": self.summary(live), "turn": record})
        elif event == "state":
            self.events.publish("state", {"session": self.summary(live)})
        elif event == "started":
            self.metrics.sessions.labels(transport=live.transport).inc()
            self.events.publish("session-started", {"session": self.session_detail(live)})
        elif event == "ended":
            self.events.publish("session-ended", {"session": self.summary(live)})

    # --- views ---------------------------------------------------------------------------
    def session_detail(self, live: LiveSession) -> dict:
        return {**self.summary(live), "history": list(live.history)}

    def snapshot(self) -> dict:
        return {
            "now": time.time(),
            "pid": os.getpid(),
            "node": self.node,
            "stages": list(STAGES),
            "chart_turns": self.recent_turns.maxlen,
            "session_turns": self.sessions.history_turns,
            "providers": vars(self.providers) if self.providers else None,
            "sessions": [self.session_detail(live) for live in self.sessions.all()]
            + self.remote_sessions(),
            "recent_turns": list(self.recent_turns),
        }

    async def stream(self, request: Request):
        """The body of one `/api/events` stream; the snapshot is taken on subscribing."""
        subscriber = self.events.subscribe()
        snapshot = self.snapshot()

        async def body():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STREAM_SECS
            try:
                yield "retry: 1000\n\n"
                yield _sse("snapshot", snapshot)
                while (left := deadline - loop.time()) > 0:
                    try:
                        item = await asyncio.wait_for(
                            subscriber.queue.get(), min(HEARTBEAT_SECS, left)
                        )
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if item is None:
                        break
                    yield _sse(*item)
            finally:
                self.events.unsubscribe(subscriber)

        return body()

    def router(self) -> APIRouter:
        router = APIRouter()
        data = admin_router(self.settings, tags=["dashboard"])

        @router.get("/metrics", include_in_schema=False)
        async def metrics():
            return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

        @data.get(
            "/api/dashboard",
            response_model=dict[str, Any],
            summary="Every live session, its recent turns, the recent turns across sessions",
        )
        async def dashboard_snapshot():
            return self.snapshot()

        @data.get(
            "/api/events",
            summary="Live dashboard events (server-sent events)",
            description="A `snapshot` event, then `session-started`, `state`, `turn` and "
            f"`session-ended` as they happen; the stream ends after {STREAM_SECS:.0f} s "
            "(clients reconnect at once).",
            response_class=StreamingResponse,
            responses={
                200: {
                    "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
                    "description": "The event stream (the schema: one event)",
                }
            },
        )
        async def events(request: Request):
            return StreamingResponse(
                await self.stream(request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        @router.get("/dashboard", include_in_schema=False)
        async def dashboard():
            return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})

        router.include_router(data)
        return router


def install_observability(
    app: FastAPI,
    settings: Settings,
    registry: SessionRegistry,
    session_processes: SessionProcessMetrics | None = None,
) -> Observability:
    """Add `/metrics`, `/dashboard` and its API to `app`; call before any catch-all mount.
    `session_processes`: where the app's session processes count (web/process_metrics.py)."""
    observability = Observability(settings, registry, session_processes)
    app.state.observability = observability
    app.state.metrics_registry = observability.metrics.registry
    app.include_router(observability.router())
    app.mount("/dashboard/assets", StaticFiles(directory=DASHBOARD_DIR), name="dashboard-assets")
    logger.debug("Dashboard at /dashboard, Prometheus metrics at /metrics")
    return observability
