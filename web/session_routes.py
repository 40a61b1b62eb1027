"""The session endpoints: `WS /ws` and `POST|PATCH /api/offer` (WebRTC).

Two ways to run what connects there, chosen by SESSION_PROCESSES:

- `in_process_session_router`: the session's pipeline runs in this process (default);
- `worker_session_router`: each session runs in its own worker process (web/spawner.py,
  web/worker.py), which serves these same in-process routes for that one session on a
  loopback port. This process relays the WebSocket's messages, or forwards the WebRTC
  offer (the media then flows between the browser and the worker directly), so a bot
  that crashes takes only its own session down.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import httpx
import websockets
from fastapi import APIRouter, BackgroundTasks, HTTPException, WebSocket, WebSocketDisconnect
from loguru import logger
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)

from bot.config import Settings
from bot.pipeline import Session, run_bot
from transports.webrtc import create_webrtc_transport
from transports.websocket import create_websocket_transport
from web.sessions import SessionLimitError, SessionRegistry
from web.spawner import BotSpawner, SpawnError, WorkerLink

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INTERNAL_ERROR = 1011


def in_process_session_router(
    settings: Settings,
    registry: SessionRegistry,
    new_session: Callable[[str], Session],
    webrtc: SmallWebRTCRequestHandler,
) -> APIRouter:
    router = APIRouter()

    @router.websocket("/ws")
    async def websocket_session(websocket: WebSocket):
        if not await _admit(websocket, registry):
            return
        session = new_session("websocket")
        transport = create_websocket_transport(websocket, settings)
        await registry.run(session, "websocket", run_bot(transport, session))

    @router.post("/api/offer")
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

    @router.patch("/api/offer")
    async def webrtc_ice_candidate(request: SmallWebRTCPatchRequest):
        await webrtc.handle_patch_request(request)
        return {"status": "success"}

    return router


def worker_session_router(settings: Settings, registry: SessionRegistry, spawner: BotSpawner) -> APIRouter:
    router = APIRouter()
    peers: dict[str, WorkerLink] = {}  # WebRTC pc_id → the worker that holds the connection

    @router.websocket("/ws")
    async def websocket_session(websocket: WebSocket):
        if not await _admit(websocket, registry):
            return
        try:
            link = await spawner.spawn("websocket")
        except SpawnError as e:
            logger.warning(f"Could not start a WebSocket session's worker: {e}")
            await websocket.close(code=CLOSE_INTERNAL_ERROR, reason=f"could not start the bot: {e}"[:120])
            return
        await _relay(websocket, f"ws://127.0.0.1:{link.port}/ws", settings.max_message_bytes, link)

    @router.post("/api/offer")
    async def webrtc_offer(request: SmallWebRTCRequest):
        link = peers.get(request.pc_id or "")
        if link is None:  # a new connection: a new worker
            try:
                registry.reserve()
            except SessionLimitError as e:
                logger.warning(f"Refused a WebRTC session: {e}")
                raise HTTPException(status_code=503, detail=str(e)) from e
            try:
                link = await spawner.spawn("webrtc")
            except SpawnError as e:
                raise HTTPException(status_code=502, detail=f"Could not start the bot: {e}") from e
        answer = await _forward(link, "POST", dataclasses.asdict(request))
        if answer.get("pc_id") and answer["pc_id"] not in peers:
            pc_id = answer["pc_id"]
            peers[pc_id] = link
            link.on_exit.append(lambda: peers.pop(pc_id, None))
        return answer

    @router.patch("/api/offer")
    async def webrtc_ice_candidate(request: SmallWebRTCPatchRequest):
        link = peers.get(request.pc_id)
        if link is None:
            raise HTTPException(status_code=404, detail=f"no WebRTC connection {request.pc_id!r}")
        return await _forward(link, "PATCH", dataclasses.asdict(request))

    return router


async def _admit(websocket: WebSocket, registry: SessionRegistry) -> bool:
    """Accept the WebSocket and reserve its session's slot, or close it with the reason."""
    await websocket.accept()
    try:
        registry.reserve()
    except SessionLimitError as e:
        logger.warning(f"Refused a WebSocket session: {e}")
        await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason=str(e)[:120])
        return False
    return True


async def _forward(link: WorkerLink, method: str, body: dict) -> dict:
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            r = await http.request(method, f"http://127.0.0.1:{link.port}/api/offer", json=body)
    except httpx.HTTPError as e:
        raise HTTPException(status_code=502, detail=f"the session's worker did not answer: {e}") from e
    if r.status_code >= 400:
        raise HTTPException(status_code=r.status_code, detail=r.json().get("detail", r.text))
    return r.json()


async def _relay(browser: WebSocket, url: str, max_bytes: int, link: WorkerLink) -> None:
    """Pass messages both ways until either side closes; the worker's close code goes on."""
    try:
        worker = await websockets.connect(url, max_size=max_bytes, open_timeout=10, ping_interval=None)
    except (OSError, websockets.WebSocketException, TimeoutError) as e:
        logger.bind(session_id=link.session_id).warning(f"Could not reach the session's worker: {e}")
        await browser.close(code=CLOSE_INTERNAL_ERROR, reason="the bot's process is unreachable")
        return

    async def browser_to_worker():
        try:
            while True:
                message = await browser.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                await worker.send(data if data is not None else message.get("text", ""))
        except (WebSocketDisconnect, websockets.ConnectionClosed):
            return

    async def worker_to_browser():
        try:
            async for data in worker:
                if isinstance(data, bytes):
                    await browser.send_bytes(data)
                else:
                    await browser.send_text(data)
        except websockets.ConnectionClosed:
            pass
        except (WebSocketDisconnect, RuntimeError):  # the browser has gone
            return
        code, reason = worker.close_code, worker.close_reason or ""
        if code in (None, 1005, 1006):  # no close frame: the worker died
            code, reason = CLOSE_INTERNAL_ERROR, "the bot's process ended unexpectedly"
        try:
            await browser.close(code=code, reason=reason[:120])
        except RuntimeError:
            pass

    tasks = [asyncio.create_task(browser_to_worker()), asyncio.create_task(worker_to_browser())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker.close()
