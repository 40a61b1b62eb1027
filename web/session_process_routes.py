"""The session endpoints (`WS /ws`, `POST|PATCH /api/offer`) with SESSION_PROCESSES: each
session runs in its own session process (web/spawner.py, web/session_process.py), which serves the
in-process routes (web/session_routes.py) for that one session on a loopback port. This
process relays the WebSocket's messages, or forwards the WebRTC offer (the media then flows
between the browser and the session process directly), so a bot that crashes takes only its
own session down. Admission and offer checks are the same as in process.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import httpx
import pipecat.frames.protobufs.frames_pb2 as proto
import websockets
from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect, status
from google.protobuf.message import DecodeError
from loguru import logger

from bot.config import Settings
from transports.websocket import AUDIO_BURST_SECS
from web.admission import Admission
from web.resume import ResumeKeeper, ResumeRefused, take_conversation
from web.offers import Answer, CandidatesPatch, Offer, PatchResult, check_offer
from web.session_routes import OFFER_RESPONSES, PATCH_RESPONSES, no_connection
from web.sessions import SessionRegistry, Slot
from web.spawner import BotSpawner, SpawnError, SessionProcessLink

CLOSE_INTERNAL_ERROR = 1011
# What a WebSocket client sends while its session process is starting is kept for it: its
# messages (the RTVI handshake) up to this many, its audio up to a burst (the latest).
EARLY_MESSAGES = 32
SESSION_PROCESS_RESPONSES: dict[int | str, dict] = {
    502: {"description": "The session's session process could not be started or reached"},
}


def session_process_router(
    settings: Settings,
    registry: SessionRegistry,
    spawner: BotSpawner,
    resumes: ResumeKeeper | None,
) -> APIRouter:
    router = APIRouter(tags=["sessions"])
    admission = Admission(settings, registry)
    # WebRTC pc_id → the session process that holds the connection
    peers: dict[str, SessionProcessLink] = {}

    @router.websocket("/ws")
    async def websocket_session(websocket: WebSocket):
        slot = await admission.websocket(websocket)
        if slot is None:
            return
        query = websocket.query_params
        ticket = (
            (query["session_id"], query.get("resume_token", "")) if "session_id" in query else None
        )
        try:  # checked here, before a process is started for it
            resumed = await take_conversation(resumes, ticket)
        except ResumeRefused as e:
            slot.release()
            await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason=str(e)[:120])
            return
        early = HeldMessages()
        try:
            link = await _spawn_while_reading(spawner, slot, websocket, early, resumed)
        except SpawnError as e:
            logger.warning(f"Could not start a WebSocket session's process: {e}")
            await websocket.close(
                code=CLOSE_INTERNAL_ERROR, reason=f"could not start the bot: {e}"[:120]
            )
            return
        if link is None:  # the client left while its bot was starting
            return

        def browser_left() -> None:  # its slot is free now; the session process ends its session
            live = registry.get(link.session_id)
            if live is not None:
                registry.release(live)
            slot.release()

        try:
            # The query (user_id) is the session's to read and refuse, as in-process.
            query = f"?{websocket.url.query}" if websocket.url.query else ""
            await _relay(
                websocket,
                f"ws://127.0.0.1:{link.port}/ws{query}",
                settings.max_message_bytes,
                link,
                browser_left,
                early,
            )
        finally:
            browser_left()

    @router.post(
        "/api/offer",
        response_model=Answer,
        responses={**OFFER_RESPONSES, **SESSION_PROCESS_RESPONSES},
        summary="Start (or renegotiate) a WebRTC session",
    )
    async def webrtc_offer(offer: Offer, request: Request):
        admission.check_origin(request)
        check_offer(offer.sdp)
        body = dataclasses.asdict(offer.for_pipecat())
        link = peers.get(offer.pc_id or "")
        if link is None:
            offer.user_id()  # refused here, before a process is started for it
            try:
                resumed = await take_conversation(resumes, offer.resume())
            except ResumeRefused as e:
                raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from e
            slot = admission.slot(request, "WebRTC")
            link = await _spawn(spawner, slot, resumed)
            answer = await _forward_or_stop(link, body, slot)
        else:  # a renegotiation
            answer = await _forward(link, "POST", body)
        pc_id = answer["pc_id"]
        if pc_id not in peers:  # a new connection, or a restarted one (a new id)
            peers[pc_id] = link
            link.on_exit.append(lambda: peers.pop(pc_id, None))
        return answer

    @router.patch(
        "/api/offer",
        response_model=PatchResult,
        responses={**PATCH_RESPONSES, **SESSION_PROCESS_RESPONSES},
        summary="Trickle ICE candidates to a WebRTC connection",
    )
    async def webrtc_ice_candidate(patch: CandidatesPatch, request: Request):
        admission.check_origin(request)
        link = peers.get(patch.pc_id)
        if link is None:
            raise no_connection(patch.pc_id)
        return await _forward(link, "PATCH", dataclasses.asdict(patch.for_pipecat()))

    return router


async def _spawn_while_reading(
    spawner: BotSpawner, slot: Slot, browser: WebSocket, early: HeldMessages, resumed: dict | None
) -> SessionProcessLink | None:
    """A session process for a WebSocket session. Loading one can take a while: meanwhile the
    client's socket is read (so its keepalive pings are answered) and what it sends kept
    for the session process, within bounds (`EARLY_MESSAGES`; the latest AUDIO_BURST_SECS of its
    audio, which the session process takes at once). None if the client leaves first."""
    spawning = asyncio.create_task(spawner.spawn(slot, "websocket", resumed=resumed))

    async def read() -> None:
        while True:
            message = await browser.receive()
            if message["type"] == "websocket.disconnect":
                return
            early.add(message)

    reading = asyncio.create_task(read())
    try:
        await asyncio.wait({spawning, reading}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    if not spawning.done():  # the client has gone: so does its bot
        spawning.cancel()
        await asyncio.gather(spawning, return_exceptions=True)
        return None
    return spawning.result()


class HeldMessages:
    """What a client sends while its session process starts, kept for it within bounds."""

    def __init__(self):
        self._held: list[tuple[dict, float | None]] = []  # (message, seconds if audio)
        self._messages = 0
        self._audio_secs = 0.0

    def add(self, message: dict) -> None:
        secs = _audio_secs(message.get("bytes"))
        if secs is None:
            if self._messages < EARLY_MESSAGES:
                self._held.append((message, None))
                self._messages += 1
            return
        self._held.append((message, secs))
        self._audio_secs += secs
        while self._audio_secs > AUDIO_BURST_SECS:  # the oldest audio goes
            i = next(i for i, (_, held) in enumerate(self._held) if held is not None)
            self._audio_secs -= self._held.pop(i)[1]

    def __iter__(self):
        return (message for message, _ in self._held)


def _audio_secs(data: bytes | None) -> float | None:
    """How long an audio message is; None for any other message."""
    if not data:
        return None
    try:
        frame = proto.Frame.FromString(data)
    except DecodeError:
        return None
    if frame.WhichOneof("frame") != "audio":
        return None
    audio = frame.audio
    return len(audio.audio) / (2 * max(audio.num_channels, 1) * max(audio.sample_rate, 1))


async def _spawn(spawner: BotSpawner, slot: Slot, resumed: dict | None) -> SessionProcessLink:
    try:
        return await spawner.spawn(slot, "webrtc", resumed=resumed)
    except SpawnError as e:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"Could not start the bot: {e}") from e


async def _forward_or_stop(link: SessionProcessLink, body: dict, slot: Slot) -> dict:
    """A new connection's offer to its session process; if it fails, the process and its
    session go, and the slot with them."""
    try:
        return await _forward(link, "POST", body)
    except BaseException:
        slot.release()
        await link.stop()
        raise


async def _forward(link: SessionProcessLink, method: str, body: dict) -> dict:
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            r = await http.request(method, f"http://127.0.0.1:{link.port}/api/offer", json=body)
    except httpx.HTTPError as e:
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY, f"the session's process did not answer: {e}"
        ) from e
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        code = r.status_code if r.status_code in (400, 404) else status.HTTP_502_BAD_GATEWAY
        raise HTTPException(code, detail)
    return r.json()


async def _relay(
    browser: WebSocket,
    url: str,
    max_bytes: int,
    link: SessionProcessLink,
    browser_left: Callable[[], None],
    early: HeldMessages,
) -> None:
    """Pass messages both ways until either side closes; the session process's close code goes on.
    `early`: what the browser sent before the session process was up, passed on first."""
    try:
        upstream = await websockets.connect(
            url, max_size=max_bytes, open_timeout=10, ping_interval=None
        )
    except (OSError, websockets.WebSocketException, TimeoutError) as e:
        logger.bind(session_id=link.session_id).warning(
            f"Could not reach the session's process: {e}"
        )
        await browser.close(code=CLOSE_INTERNAL_ERROR, reason="the bot's process is unreachable")
        return

    async def browser_to_process():
        try:
            for message in early:
                data = message.get("bytes")
                await upstream.send(data if data is not None else message.get("text", ""))
            while True:
                message = await browser.receive()
                if message["type"] == "websocket.disconnect":
                    browser_left()
                    return
                data = message.get("bytes")
                await upstream.send(data if data is not None else message.get("text", ""))
        except WebSocketDisconnect:
            browser_left()
        except websockets.ConnectionClosed:
            return

    async def process_to_browser():
        try:
            async for data in upstream:
                if isinstance(data, bytes):
                    await browser.send_bytes(data)
                else:
                    await browser.send_text(data)
        except websockets.ConnectionClosed:
            pass
        except (WebSocketDisconnect, RuntimeError):  # the browser has gone
            return
        code, reason = upstream.close_code, upstream.close_reason or ""
        if code in (None, 1005, 1006):  # no close frame: the session process died
            code, reason = CLOSE_INTERNAL_ERROR, "the bot's process ended unexpectedly"
        try:
            await browser.close(code=code, reason=reason[:120])
        except RuntimeError:
            pass

    tasks = [asyncio.create_task(browser_to_process()), asyncio.create_task(process_to_browser())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
