"""`POST /api/rooms` (alias `/api/connect`, the Pipecat convention): a Daily room with a bot in it.

Creates a room and meeting tokens through Daily's REST API (DAILY_API_URL), spawns a
bot for the room in a session process, and returns what the browser needs to join. In
cluster mode `place` may have the room made on another node (web/cluster/placement.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiohttp
from fastapi import APIRouter, HTTPException, Request, Response
from loguru import logger
from pipecat.transports.daily.utils import DailyRESTHelper, DailyRoomParams, DailyRoomProperties
from pydantic import BaseModel, Field, ValidationError

from bot.config import Settings
from web.admission import ADMISSION_RESPONSES, Admission
from web.http_hygiene import BODY_RESPONSES
from web.sessions import SessionRegistry
from web.spawner import BotSpawner, SpawnError

MIN_ROOM_SECS = 60
MAX_ROOM_SECS = 24 * 3600
ROOM_RESPONSES: dict[int | str, dict] = {
    **BODY_RESPONSES,
    **ADMISSION_RESPONSES,
    422: {"description": "The body is not a RoomRequest (the field and the reason)"},
    502: {"description": "Daily's API, or the room's bot process, failed (the reason)"},
}


class RoomRequest(BaseModel):
    """Optional room settings; the default is a private room that expires in an hour.

    Bounded: a room shorter than a minute is useless, a negative one already expired, and
    a room (and its bot process) is not kept for more than a day.
    """

    expiry_secs: int = Field(3600, ge=MIN_ROOM_SECS, le=MAX_ROOM_SECS)


class RoomAnswer(BaseModel):
    room_url: str
    token: str
    session_id: str


# A room's placement: the answer of the node that made it, or None to make it on this one.
RoomPlacement = Callable[[Request, RoomRequest], Awaitable[Response | None]]


def rooms_router(
    settings: Settings,
    registry: SessionRegistry,
    spawner: BotSpawner,
    place: RoomPlacement | None = None,
) -> APIRouter:
    router = APIRouter(tags=["daily"])
    admission = Admission(settings, registry)
    # Without a Daily key the route only says so (503): not part of this server's API then.
    configured = bool(settings.daily_api_key and settings.daily_api_key.get_secret_value())

    @router.post(
        "/api/rooms",
        response_model=RoomAnswer,
        responses=ROOM_RESPONSES,
        include_in_schema=configured,
    )
    @router.post("/api/connect", response_model=RoomAnswer, include_in_schema=False)
    async def create_room(request: Request) -> RoomAnswer | Response:
        if not configured:
            raise HTTPException(503, "Daily rooms are not configured: set DAILY_API_KEY")
        # A room costs a bot process and Daily minutes: a foreign page may not start one.
        admission.check_origin(request)
        body = await request.body()
        try:
            params = RoomRequest.model_validate_json(body) if body.strip() else RoomRequest()
        except ValidationError as e:
            raise HTTPException(422, e.errors(include_url=False, include_input=False)) from e
        if place is not None and (placed := await place(request, params)) is not None:
            return placed
        slot = admission.slot(request, "Daily")
        try:
            timeout = aiohttp.ClientTimeout(total=settings.daily_api_timeout_secs)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                daily = DailyRESTHelper(
                    daily_api_key=settings.daily_api_key.get_secret_value(),
                    daily_api_url=settings.daily_api_url,
                    aiohttp_session=http,
                )
                # Participants (the bot included) are removed when the room expires, as
                # Pipecat's own runner does: an expired room must not keep a bot talking.
                properties = DailyRoomProperties(
                    exp=time.time() + params.expiry_secs, eject_at_room_exp=True
                )
                room = await daily.create_room(
                    DailyRoomParams(privacy="private", properties=properties)
                )
                bot_token = await daily.get_token(room.url, params.expiry_secs, owner=True)
                user_token = await daily.get_token(room.url, params.expiry_secs, owner=False)
        except Exception as e:
            slot.release()
            logger.warning(f"Daily REST API failed: {e}")
            raise HTTPException(502, f"Daily's API refused to create the room: {e}") from e
        try:
            session_id = await spawner.spawn_daily(slot, room.url, bot_token)
        except SpawnError as e:
            logger.warning(f"Could not start a bot for {room.url}: {e}")
            raise HTTPException(502, f"Could not start a bot for the room: {e}") from e
        return RoomAnswer(room_url=room.url, token=user_token, session_id=session_id)

    return router
