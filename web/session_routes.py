"""The session endpoints: `WS /ws` and `POST|PATCH /api/offer` (WebRTC).

`in_process_session_router`: the session's pipeline runs in this process (the default).
With SESSION_PROCESSES each session runs in its own process instead, and this process
relays to it (web/session_process_routes.py).

Either way a new session passes web/admission.py (origin, limits) and a WebRTC offer is
checked (web/offers.py) before anything is reserved or started for it; a failure after
that gives everything back. The slot is released the moment the client leaves (teardown
goes on outside the count), and a WebRTC peer that has not connected within
WEBRTC_CONNECT_TIMEOUT_SECS is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine

from fastapi import APIRouter, HTTPException, Request, WebSocket, status
from loguru import logger
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequestHandler

from bot.config import Settings
from bot.memory import valid_user_id
from bot.pipeline import run_bot
from bot.session import Session
from transports.webrtc import create_webrtc_transport
from transports.websocket import ClosingWebSocket, create_websocket_transport
from web.admission import ADMISSION_RESPONSES, Admission
from web.http_hygiene import BODY_RESPONSES
from web.offers import Answer, CandidatesPatch, Offer, PatchResult, check_offer
from web.sessions import SessionRegistry, Slot

# A user_id that is not an opaque id; a session_id + resume_token that resume nothing.
CLOSE_POLICY_VIOLATION = 1008

# After closing a WebRTC peer that never connected, how long its session may take to end.
END_GRACE_SECS = 5.0

OFFER_RESPONSES: dict[int | str, dict] = {
    **BODY_RESPONSES,
    **ADMISSION_RESPONSES,
    400: {"description": "The offer is not one this server can answer, or not JSON (the reason)"},
    409: {"description": "request_data names a conversation that cannot be resumed (the reason)"},
    503: {
        "description": "The server is at MAX_SESSIONS (the reason; Retry-After), or could not "
        "start the session it answered the offer for (the reason)"
    },
}
PATCH_RESPONSES: dict[int | str, dict] = {
    **BODY_RESPONSES,
    400: {"description": "A candidate does not parse, or the body is not JSON"},
    403: ADMISSION_RESPONSES[403],
    404: {"description": "No WebRTC connection has this pc_id"},
}


def in_process_session_router(
    settings: Settings,
    registry: SessionRegistry,
    new_session: Callable[..., Awaitable[Session]],
    webrtc: SmallWebRTCRequestHandler,
) -> APIRouter:
    router = APIRouter(tags=["sessions"])
    admission = Admission(settings, registry)
    peers: dict[str, SmallWebRTCConnection] = {}  # pc_id → live WebRTC connection
    sessions: set[asyncio.Task] = set()  # the WebRTC sessions' tasks

    def client_left(session: Session, slot: Slot) -> Callable:
        async def on_client_disconnected(transport, client) -> None:
            live = registry.get(session.id)
            if live is not None:
                registry.release(live)
            else:
                slot.release()

        return on_client_disconnected

    @router.websocket("/ws")
    async def websocket_session(websocket: WebSocket):
        slot = await admission.websocket(websocket)
        if slot is None:
            return
        socket = ClosingWebSocket(websocket)
        try:
            query = websocket.query_params
            resume = (
                (query["session_id"], query.get("resume_token", ""))
                if "session_id" in query
                else None
            )
            try:
                user_id = valid_user_id(query.get("user_id"))
                session = await new_session("websocket", user_id, resume)
            except ValueError as e:  # not a user id; a conversation that cannot be resumed
                await socket.close(CLOSE_POLICY_VIOLATION, str(e))
                return
            transport = create_websocket_transport(socket, settings)
            transport.add_event_handler("on_client_disconnected", client_left(session, slot))
            await registry.run(slot, session, "websocket", run_bot(transport, session))
        finally:
            slot.release()
            # Ended by the server (admin API, idle, shutdown) and not closed yet: say so.
            await socket.close(socket.code, socket.reason or "the session was ended by the server")

    @router.post(
        "/api/offer",
        response_model=Answer,
        responses=OFFER_RESPONSES,
        summary="Start (or renegotiate) a WebRTC session",
    )
    async def webrtc_offer(offer: Offer, request: Request):
        admission.check_origin(request)
        check_offer(offer.sdp)
        connection = peers.get(offer.pc_id) if offer.pc_id else None
        if connection is not None:
            answer = await _answer(webrtc, offer, None, "renegotiate")
            peers[answer["pc_id"]] = connection  # a restarted connection has a new id
            return answer

        user_id, resume = offer.user_id(), offer.resume()
        slot = admission.slot(request, "WebRTC")
        try:  # a conversation that cannot be resumed is refused before anything is answered
            session = await new_session("webrtc", user_id, resume)
        except ValueError as e:
            slot.release()
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from e
        started: list[asyncio.Task] = []
        connections: list[SmallWebRTCConnection] = []

        async def start_session(connection: SmallWebRTCConnection):
            connections.append(connection)
            transport = create_webrtc_transport(connection, settings)
            transport.add_event_handler("on_client_disconnected", client_left(session, slot))
            connected = asyncio.Event()
            transport.add_event_handler(
                "on_client_connected", lambda transport, client: connected.set()
            )
            bot = _connected_within(
                run_bot(transport, session),
                connected,
                connection,
                settings.webrtc_connect_timeout_secs,
            )
            task = asyncio.create_task(registry.run(slot, session, "webrtc", bot))
            sessions.add(task)
            task.add_done_callback(sessions.discard)
            started.append(task)

            @connection.event_handler("closed")
            async def forget(connection: SmallWebRTCConnection):
                for pc_id in [k for k, v in peers.items() if v is connection]:
                    peers.pop(pc_id, None)

            peers[connection.pc_id] = connection

        try:
            answer = await _answer(webrtc, offer, start_session, "answer")
        except BaseException:
            slot.release()
            for task in started:
                task.cancel()
            raise
        if not started:  # Pipecat swallowed (and logged) an error in start_session: ours
            slot.release()
            for connection in connections:  # answered, but no session will ever use it
                await connection.disconnect()
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the server could not start the session (its log says why); the offer was fine",
            )
        return answer

    @router.patch(
        "/api/offer",
        response_model=PatchResult,
        responses=PATCH_RESPONSES,
        summary="Trickle ICE candidates to a WebRTC connection",
    )
    async def webrtc_ice_candidate(patch: CandidatesPatch, request: Request):
        admission.check_origin(request)
        if patch.pc_id not in peers:
            raise no_connection(patch.pc_id)
        try:
            await webrtc.handle_patch_request(patch.for_pipecat())
        except HTTPException:
            raise
        except Exception as e:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"bad ICE candidate: {e}") from e
        return {"status": "success"}

    return router


def no_connection(pc_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no WebRTC connection {pc_id[:80]!r}")


async def _answer(webrtc: SmallWebRTCRequestHandler, offer: Offer, start, what: str) -> dict:
    async def no_new_session(connection):  # a renegotiation never starts one
        raise RuntimeError("unexpected new connection")

    try:
        answer = await webrtc.handle_web_request(offer.for_pipecat(), start or no_new_session)
    except HTTPException:
        raise
    except Exception as e:  # what aiortc refused in an offer that looked right
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"could not {what} the offer: {e}") from e
    if answer is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"could not {what} the offer")
    return answer


async def _connected_within(
    bot: Coroutine, connected: asyncio.Event, connection: SmallWebRTCConnection, timeout: float
) -> None:
    """Run a WebRTC session's bot; if its peer has not connected within `timeout`, close the
    peer, which ends the session (cancelled if it has not ended soon after)."""
    bot_task = asyncio.ensure_future(bot)
    waiter = asyncio.ensure_future(connected.wait())
    try:
        done, _ = await asyncio.wait(
            {bot_task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            logger.warning(
                f"The WebRTC peer did not connect within {timeout:g} s "
                "(WEBRTC_CONNECT_TIMEOUT_SECS); closing it"
            )
            await connection.disconnect()
            done, _ = await asyncio.wait({bot_task}, timeout=END_GRACE_SECS)
            if not done:
                bot_task.cancel()
                await asyncio.gather(bot_task, return_exceptions=True)
                return
        await bot_task
    finally:
        waiter.cancel()
        if not bot_task.done():
            bot_task.cancel()
            await asyncio.gather(bot_task, return_exceptions=True)
