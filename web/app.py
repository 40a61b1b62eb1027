"""The FastAPI app: the browser page, WebSocket and WebRTC sessions, health.

Every connection is one session (`bot.pipeline.run_bot`) registered in the app's
`SessionRegistry`, which enforces MAX_SESSIONS and the per-client limits and tears
sessions down on disconnect. Sessions run in this process, or each in its own session
process (SESSION_PROCESSES; web/session_routes.py). What the server refuses, and to whom
it answers, is in README "Security".
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequestHandler
from pydantic import BaseModel, Field

from bot.config import Settings, Stage
from bot.local.models import LocalModels
from bot.model_check import warn_about_models
from bot.session import Session
from bot.providers import PROVIDERS, Providers, create_memory_keeper, create_search
from web.admin import create_admin_router
from web.admission import log_origin_policy
from web.cluster import ClusterNode
from web.cluster.calls import InProcessDispatch
from web.cluster.placement import placement_router, room_placement
from web.cluster.routes import nodes_router
from web.http_hygiene import AllowedMethods, RequestBodyLimits
from web.limits import ClientLimits
from web.observability import install_observability
from web.process_metrics import SessionProcessMetrics
from web.resume import ResumeKeeper, take_conversation
from web.rooms import rooms_router
from web.session_opening import open_session
from web.session_process_routes import session_process_router
from web.session_routes import in_process_session_router
from web.sessions import SessionRegistry
from web.spawner import BotSpawner
from web.user_memory_routes import user_memory_router

CLIENT_DIST = Path(__file__).parent / "static" / "dist"

_CLIENT_MISSING = """<!doctype html><title>Voice agent</title>
<p>The web client is not built. Run <code>make client</code> (or <code>make run</code>).</p>"""


class Health(BaseModel):
    status: str
    sessions: int = Field(description="Live sessions")
    max_sessions: int
    ready_session_processes: int | None = Field(
        None,
        description="With SESSION_PROCESSES: session processes loaded and waiting, so the next "
        "session starts without loading models (while 0, a new session waits seconds for one)",
    )


def create_app(
    settings: Settings,
    models: LocalModels,
    *,
    providers: Providers = PROVIDERS,
    session_process_command: list[str] | None = None,
) -> FastAPI:
    """The server. `providers` builds each session's services and `session_process_command`
    starts a session process (`python -m bot session-process`); tests and benchmarks hand in
    theirs."""
    clients = ClientLimits(settings.max_sessions_per_client, settings.max_new_sessions_per_minute)
    registry = SessionRegistry(
        settings.max_sessions, history_turns=settings.dashboard_session_turns, clients=clients
    )
    webrtc = SmallWebRTCRequestHandler()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if cluster is not None:
            await cluster.start()
        spawner.keep_spares()
        # Configured cloud models that the providers no longer offer: said once, now.
        app.state.model_check = asyncio.create_task(warn_about_models(settings))
        yield
        app.state.model_check.cancel()
        await registry.cancel_all()
        await spawner.close()
        process_metrics.close()
        await webrtc.close()
        if cluster is not None:
            await cluster.stop()
        if memory is not None:
            await memory.close()
        if resumes is not None:
            await resumes.close()

    app = FastAPI(title="Voice agent", lifespan=lifespan)
    # The last added runs first: wrong methods are answered before a body is read, and a
    # body is bounded in size and time before any route sees it (web/http_hygiene.py).
    app.add_middleware(
        RequestBodyLimits,
        max_bytes=settings.max_request_bytes,
        timeout_secs=settings.request_body_timeout_secs,
    )
    app.add_middleware(AllowedMethods, schema=lambda: app.openapi())
    log_origin_policy(settings)
    app.state.settings = settings
    app.state.models = models
    app.state.registry = registry
    # /metrics, /dashboard, /api/events (web/observability.py); session processes' counts
    # come through prometheus-client's multiprocess files (web/process_metrics.py).
    process_metrics = SessionProcessMetrics()
    observability = install_observability(app, settings, registry, process_metrics)
    # REDIS_URL: this node's part of the cluster; /api/nodes (web/cluster/)
    cluster, place_room = None, None
    if settings.cluster:
        dispatch = InProcessDispatch(app, settings)
        cluster = ClusterNode(settings, registry, dispatch)
        place_room = room_placement(cluster, dispatch)  # /api/rooms (below)
        observability.node = cluster.id
        observability.remote_sessions = lambda: list(cluster.remote_sessions.values())
        cluster.remote_event = observability.add_remote_event
        app.include_router(nodes_router(settings, cluster))
    app.state.cluster = cluster
    # /api/sessions: list, inspect and steer live sessions (ADMIN_TOKEN; web/admin.py)
    app.include_router(create_admin_router(settings, registry, cluster))
    if settings.search_enabled:
        create_search(settings)  # web_search's knowledge base: indexed now, once per process

    def process_overrides() -> dict[str, str]:
        # Bot processes share this server's local LLM rather than loading their own.
        if Stage.LLM not in providers.local_stages(settings):
            return {}
        return {"local_llm_url": models.llm_server.base_url}

    # Cluster mode: /api/connect places a session on the least-loaded node (before /api/rooms'
    # alias of it, which it shadows), and so does /api/rooms
    if cluster is not None:
        app.include_router(placement_router(settings, cluster))
    # /api/rooms: a Daily room with a bot in its own process (web/rooms.py)
    # Resuming a dropped conversation (web/resume.py); session processes' records are kept here
    resumes = ResumeKeeper(settings) if settings.session_resume_secs > 0 else None
    if resumes is not None:  # a session's end (its process dead included) starts its window
        registry.listeners.append(resumes.on_session_event)
    spares = settings.session_process_spares if settings.session_processes else 0
    spawner = BotSpawner(
        settings,
        registry,
        settings.spawn_ready_timeout_secs,
        process_metrics,
        process_overrides,
        spares,
        command=session_process_command,
        keep_resumable=resumes.keep if resumes else None,
    )
    app.state.spawner = spawner
    app.include_router(rooms_router(settings, registry, spawner, place_room))

    # Per-user memory (bot/memory/): /api/users/{id}/memory
    memory = create_memory_keeper(settings, models)
    if memory is not None:
        registry.listeners.append(memory.on_session_event)
        app.include_router(user_memory_router(settings, memory))

    async def new_session(
        transport: str, user_id: str | None = None, resume: tuple[str, str] | None = None
    ) -> Session:
        """A session; with a user id (and MEMORY_ENABLED) it knows what its user said before
        and keeps what they say now; with a (session id, resume token) it goes on with that
        conversation (ResumeRefused if it cannot)."""
        return await open_session(
            settings,
            models,
            providers,
            transport,
            user_id=user_id,
            saved=await take_conversation(resumes, resume),
            memory=memory,
            resumes=resumes,
            observers=[observability.error_observer()],
        )

    @app.get(
        "/api/health",
        response_model=Health,
        tags=["server"],
        responses={503: {"description": "Draining (SIGTERM): no new sessions"}},
    )
    async def health():
        answer = {
            "status": "ok",
            "sessions": len(registry.all()),
            "max_sessions": registry.max_sessions,
        }
        if settings.session_processes:
            answer["ready_session_processes"] = spawner.loaded
        if registry.draining:  # a load balancer sends no new sessions here
            return JSONResponse({**answer, "status": "draining"}, status_code=503)
        return answer

    # /ws and /api/offer
    if settings.session_processes:
        app.include_router(session_process_router(settings, registry, spawner, resumes))
    else:
        app.include_router(in_process_session_router(settings, registry, new_session, webrtc))

    @app.get("/", include_in_schema=False)
    async def index():
        page = CLIENT_DIST / "index.html"
        if page.exists():
            return FileResponse(page)
        return HTMLResponse(_CLIENT_MISSING)

    # The bundle's other files (assets, icons); last, so it never shadows a route.
    app.mount("/", StaticFiles(directory=CLIENT_DIST, check_dir=False), name="client")
    return app
