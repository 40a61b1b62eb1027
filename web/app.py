"""The FastAPI app: the browser page, WebSocket and WebRTC sessions, health.

Every connection is one session (`bot.pipeline.run_bot`) registered in the app's
`SessionRegistry`, which enforces MAX_SESSIONS and tears sessions down on disconnect.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import BackgroundTasks, FastAPI, HTTPException, WebSocket
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from loguru import logger
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)

from bot.config import Settings, Stage
from bot.local_models import LocalModels
from bot.pipeline import Session, run_bot
from bot.providers import create_search
from transports.webrtc import create_webrtc_transport
from transports.websocket import create_websocket_transport
from web.admin import create_admin_router
from web.observability import install_observability
from web.rooms import rooms_router
from web.spawner import BotSpawner
from web.sessions import SessionLimitError, SessionRegistry

CLIENT_DIST = Path(__file__).parent / "static" / "dist"
CLOSE_TRY_AGAIN_LATER = 1013

_CLIENT_MISSING = """<!doctype html><title>Voice agent</title>
<p>The web client is not built. Run <code>make client</code> (or <code>make run</code>).</p>"""


def create_app(settings: Settings, models: LocalModels) -> FastAPI:
    registry = SessionRegistry(settings.max_sessions, history_turns=settings.dashboard_session_turns)
    webrtc = SmallWebRTCRequestHandler()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await registry.cancel_all()
        await webrtc.close()

    app = FastAPI(title="Voice agent", lifespan=lifespan)
    app.state.settings = settings
    app.state.models = models
    app.state.registry = registry
    # /metrics, /dashboard, /api/events (web/observability.py)
    observability = install_observability(app, settings, registry)
    # /api/sessions: list, inspect and steer live sessions (ADMIN_TOKEN; web/admin.py)
    app.include_router(create_admin_router(settings, registry))
    if settings.search_enabled:
        create_search(settings)  # web_search's knowledge base: indexed now, once per process

    def worker_env() -> dict[str, str]:
        # Bot processes share this server's local LLM rather than loading their own.
        if settings.uses_cloud(Stage.LLM) or settings.uses_fake(Stage.LLM):
            return {}
        return {"LOCAL_LLM_URL": models.llm_server.base_url}

    # /api/rooms: a Daily room with a bot in its own process (web/rooms.py)
    spawner = BotSpawner(registry, settings.spawn_ready_timeout_secs, worker_env)
    app.include_router(rooms_router(settings, registry, spawner))

    def new_session(transport: str) -> Session:
        return Session(
            settings=settings,
            models=models,
            transport_kind=transport,
            greeting=settings.greeting,
            observers=[observability.error_observer()],
        )

    @app.get("/api/health")
    async def health():
        return {"status": "ok", "sessions": len(registry.all()), "max_sessions": registry.max_sessions}

    @app.websocket("/ws")
    async def websocket_session(websocket: WebSocket):
        await websocket.accept()
        try:
            registry.reserve()
        except SessionLimitError as e:
            logger.warning(f"Refused a WebSocket session: {e}")
            await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason=str(e)[:120])
            return
        session = new_session("websocket")
        transport = create_websocket_transport(websocket, settings)
        await registry.run(session, "websocket", run_bot(transport, session))

    @app.post("/api/offer")
    async def webrtc_offer(request: SmallWebRTCRequest, background_tasks: BackgroundTasks):
        renegotiation = bool(request.pc_id) and request.pc_id in webrtc._pcs_map
        if not renegotiation:
            try:
                registry.reserve()
            except SessionLimitError as e:
                logger.warning(f"Refused a WebRTC session: {e}")
                raise HTTPException(status_code=503, detail=str(e)) from e

        async def start_session(connection: SmallWebRTCConnection):
            session = new_session("webrtc")
            transport = create_webrtc_transport(connection, settings)
            background_tasks.add_task(registry.run, session, "webrtc", run_bot(transport, session))

        try:
            return await webrtc.handle_web_request(request, start_session)
        except Exception:
            if not renegotiation:
                registry.release_reservation()
            raise

    @app.patch("/api/offer")
    async def webrtc_ice_candidate(request: SmallWebRTCPatchRequest):
        await webrtc.handle_patch_request(request)
        return {"status": "success"}

    @app.get("/", include_in_schema=False)
    async def index():
        page = CLIENT_DIST / "index.html"
        if page.exists():
            return FileResponse(page)
        return HTMLResponse(_CLIENT_MISSING)

    # The bundle's other files (assets, icons); last, so it never shadows a route.
    app.mount("/", StaticFiles(directory=CLIENT_DIST, check_dir=False), name="client")
    return app
