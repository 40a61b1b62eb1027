"""`POST /api/connect` and `POST /api/rooms` in cluster mode: a new session goes to the
least-loaded node.

`/api/connect` body (optional): `{"transport": "websocket" | "webrtc" | "daily",
"expiry_secs": …}`. websocket / webrtc: the chosen node's URLs, to connect to. daily (the
default, as Pipecat's clients call it): the chosen node creates the room and starts its bot
(its `/api/rooms`, dispatched there: made there, not placed again); the answer is the room's
with the node's URLs. `/api/rooms` (`{"expiry_secs": …}`) is placed the same way.
Load is live sessions plus those placed there in the last few seconds (not connected yet),
over MAX_SESSIONS; draining and full nodes are skipped; a full cluster answers 503.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.config import Settings
from web.admission import OriginPolicy, client_address
from web.cluster.calls import InProcessDispatch
from web.cluster.node import ClusterNode
from web.cluster.steering import ClusterUnavailable, OwnerTimeout
from web.rooms import RoomPlacement, RoomRequest

# A placement counts as a session on its node this long (a client connects well within it;
# one that connects sooner counts twice meanwhile, which errs towards spreading).
PLACED_SECS = 5.0


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transport: Literal["websocket", "webrtc", "daily"] = "daily"
    expiry_secs: int | None = Field(None, description="daily: the room's lifetime")


class Placement(BaseModel):
    node: str
    url: str
    ws_url: str = Field(description="Open a WebSocket session here")
    offer_url: str = Field(description="POST a WebRTC offer here")


def placement_of(node: dict) -> Placement:
    url = node["url"]
    ws = "wss" + url[5:] if url.startswith("https") else "ws" + url[4:]
    return Placement(node=node["id"], url=url, ws_url=f"{ws}/ws", offer_url=f"{url}/api/offer")


async def choose(cluster: ClusterNode) -> dict:
    """The least-loaded node taking sessions; 503 with the reason if there is none."""
    try:
        nodes = await cluster.nodes()
        placed = await cluster.placed([n["id"] for n in nodes], PLACED_SECS)
    except ClusterUnavailable as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from e
    open_nodes = [
        n
        for n in nodes
        if not n["draining"] and n["sessions"] + placed[n["id"]] < n["max_sessions"]
    ]
    if not open_nodes:
        draining = sum(n["draining"] for n in nodes)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"no node can take a session: {len(nodes)} live, {draining} draining, the rest at "
            "MAX_SESSIONS; try again in a moment",
            headers={"Retry-After": "5"},
        )
    chosen = min(
        open_nodes,
        key=lambda n: (
            (n["sessions"] + placed[n["id"]]) / n["max_sessions"],
            n["cpu_percent"],
            n["id"],
        ),
    )
    await cluster.place(chosen["id"], PLACED_SECS)
    return chosen


async def room_on(cluster: ClusterNode, chosen: dict, room: dict, request: Request) -> JSONResponse:
    """A Daily room and its bot made on the `chosen` node (its `/api/rooms`): its answer, with
    the node's URLs."""
    client = client_address(request)
    try:
        if chosen["id"] == cluster.id:
            code, answer = await cluster.dispatch("POST", "/api/rooms", room, client)
        else:
            code, answer = await cluster.call(chosen["id"], "POST", "/api/rooms", room, client)
    except ClusterUnavailable as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from e
    except OwnerTimeout as e:
        raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, str(e)) from e
    if code == 200:
        answer = {**answer, **placement_of(chosen).model_dump()}
    return JSONResponse(answer, status_code=code)


def room_placement(cluster: ClusterNode, dispatch: InProcessDispatch) -> RoomPlacement:
    """`/api/rooms`' placement: a client's room goes to the least-loaded node; one this node
    dispatched to itself (placed here) is made here."""

    async def place(request: Request, params: RoomRequest) -> JSONResponse | None:
        if dispatch.dispatched(request):
            return None
        return await room_on(cluster, await choose(cluster), params.model_dump(), request)

    return place


def placement_router(settings: Settings, cluster: ClusterNode) -> APIRouter:
    router = APIRouter(tags=["sessions"])
    origins = OriginPolicy(settings.origin_list)

    @router.post(
        "/api/connect",
        summary="Start a session on the least-loaded node",
        responses={
            503: {"description": "No node can take a session (the reason)"},
            403: {"description": "The page's origin may not open sessions (ALLOWED_ORIGINS)"},
            422: {"description": "Not a ConnectRequest"},
        },
    )
    async def connect(request: Request):
        if not origins.allows(request):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "this page's origin may not open sessions here (ALLOWED_ORIGINS)",
            )
        raw = await request.body()
        try:
            body = ConnectRequest.model_validate_json(raw) if raw.strip() else ConnectRequest()
        except ValidationError as e:
            raise HTTPException(422, e.errors(include_url=False, include_input=False)) from e
        chosen = await choose(cluster)
        if body.transport != "daily":
            return placement_of(chosen)
        return await room_on(
            cluster, chosen, body.model_dump(exclude={"transport"}, exclude_none=True), request
        )

    return router
