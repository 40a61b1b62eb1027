"""The admin API: list, inspect and steer live sessions (`/api/sessions`).

    GET    /api/sessions                 every live session (in cluster mode: of every node)
    GET    /api/sessions/{id}            one session: state, turns, instructions, context size
    PUT    /api/sessions/{id}/context    replace or append to its instructions (next LLM turn)
    POST   /api/sessions/{id}/say        the bot says a text now
    DELETE /api/sessions/{id}            end the session cleanly

Every route needs `Authorization: Bearer <ADMIN_TOKEN>` (compared in constant time). With
no ADMIN_TOKEN set, the API answers loopback clients only (by the client address: the TCP
peer, or whom a TRUSTED_PROXIES proxy names; put a token on any server behind a reverse
proxy). The dashboard's data (web/observability.py) is behind the same `admin_access`.
In cluster mode (REDIS_URL) a call for a session of another node is answered by that node
(web/cluster/node.py): 503 while Redis is unavailable, 504 if the owner does not answer.
Changes go through `bot.session_control`: nothing restarts the session's pipeline. The
schemas are on the OpenAPI page (/docs).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loguru import logger
from pydantic import BaseModel

from bot.config import Settings
from bot.session_control import InstructionMode
from web.admin_schemas import (
    ContextInfo,
    ContextUpdate,
    ContextUpdateResult,
    EndResult,
    SayRequest,
    SayResult,
    SessionDetail,
    SessionSummary,
)
from web.cluster.calls import forward
from web.cluster.node import ClusterNode
from web.cluster.steering import ClusterUnavailable
from web.http_hygiene import BODY_RESPONSES
from web.sessions import LiveSession, SessionLevers, SessionRegistry

# How long DELETE waits for a graceful end before cancelling the session.
END_GRACE_SECS = 10.0
# How long PUT …/context waits for the LLM to take new instructions before answering
# "applied": false (they are queued and still apply before the next turn).
APPLY_WAIT_SECS = 2.0

FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")

# What every admin route may answer before it runs (`admin_access`).
ADMIN_RESPONSES: dict[int | str, dict] = {
    401: {"description": "Missing or wrong bearer token"},
    403: {"description": "No ADMIN_TOKEN set and the client is not on this machine"},
}

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="ADMIN_TOKEN. Unset on the server: loopback clients only, no token.",
)


# --------------------------------------------------------------------------------------
# Access
# --------------------------------------------------------------------------------------


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def admin_access(settings: Settings):
    """The dependency every admin route runs first (before any body is parsed)."""
    secret = settings.admin_token.get_secret_value() if settings.admin_token else ""
    token = secret.encode() if secret else None
    trusted_proxies = bool(settings.trusted_proxy_list)

    async def require_admin(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> None:
        if token is not None:
            presented = credentials.credentials.encode() if credentials else b""
            # compare_digest runs in time independent of where the strings differ.
            if not hmac.compare_digest(presented, token):
                raise HTTPException(
                    status.HTTP_401_UNAUTHORIZED,
                    "missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return
        client = request.client.host if request.client else None
        # A request a local proxy forwarded (and named its client) is not from this machine,
        # unless TRUSTED_PROXIES let the server read who the client is.
        forwarded = any(h in request.headers for h in FORWARDING_HEADERS)
        if not is_loopback(client) or (forwarded and not trusted_proxies):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "ADMIN_TOKEN is not set on the server, so the admin API only answers clients "
                "on the same machine",
            )

    return require_admin


def admin_router(
    settings: Settings, *, tags: list[str], prefix: str = "", unavailable: str = ""
) -> APIRouter:
    """A router every route of which needs the admin token (`admin_access`); `unavailable`:
    what a 503 from its routes means, if they can answer one."""
    responses = dict(ADMIN_RESPONSES)
    if unavailable:
        responses[503] = {"description": unavailable}
    return APIRouter(
        prefix=prefix,
        tags=tags,
        dependencies=[Depends(admin_access(settings))],
        responses=responses,
    )


# --------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------


def create_admin_router(
    settings: Settings, registry: SessionRegistry, cluster: ClusterNode | None = None
) -> APIRouter:
    if settings.admin_token and settings.admin_token.get_secret_value():
        logger.info("Admin API at /api/sessions: bearer token required (ADMIN_TOKEN)")
    else:
        logger.warning(
            "ADMIN_TOKEN is not set: the admin API (/api/sessions) answers loopback clients "
            "only, without a token"
        )

    router = admin_router(settings, prefix="/api/sessions", tags=["admin"])
    not_found = {404: {"description": "No live session has this id"}}
    if cluster is not None:
        not_found |= {
            503: {"description": "Redis is unavailable (cluster mode)"},
            504: {"description": "The session's node did not answer (cluster mode)"},
        }
    conflict = {409: {"description": "The session is starting or ending; try again"}}

    def live_session(session_id: str) -> LiveSession:
        live = registry.get(session_id)
        if live is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live session {session_id!r}")
        return live

    def control_of(live: LiveSession) -> SessionLevers:
        control = live.control
        if control is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"session {live.id!r} is starting or ending; try again"
            )
        return control

    def summary(live: LiveSession) -> SessionSummary:
        return SessionSummary(**live.summary())

    async def elsewhere(request: Request, session_id: str, body: BaseModel | None = None):
        """The owning node's answer, for a session another node runs (cluster mode)."""
        if cluster is None or registry.get(session_id) is not None:
            return None
        return await forward(
            cluster,
            session_id,
            request.method,
            request.url.path,
            body.model_dump() if body else None,
        )

    @router.get(
        "",
        response_model=list[SessionSummary],
        response_model_exclude_none=True,
        summary="List live sessions",
        responses={503: {"description": "Redis is unavailable"}},
    )
    async def list_sessions():
        if cluster is None:
            return [summary(live) for live in registry.all()]
        try:
            return await cluster.sessions()
        except ClusterUnavailable as e:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from e

    @router.get(
        "/{session_id}", response_model=SessionDetail, responses=not_found, summary="One session"
    )
    async def get_session(session_id: str, request: Request):
        if (answer := await elsewhere(request, session_id)) is not None:
            return answer
        live = live_session(session_id)
        control = live.control
        return SessionDetail(
            **live.summary(),
            instructions=control.instructions if control else None,
            instruction_updates=control.updates if control else 0,
            context=ContextInfo(**control.context_summary())
            if control
            else ContextInfo(messages=0),
        )

    @router.put(
        "/{session_id}/context",
        response_model=ContextUpdateResult,
        responses={**not_found, **conflict, **BODY_RESPONSES},
        summary="Replace or append to a session's instructions",
        description="Takes effect from the session's next LLM turn; the pipeline keeps running.",
    )
    async def update_context(session_id: str, body: ContextUpdate, request: Request):
        if (answer := await elsewhere(request, session_id, body)) is not None:
            return answer
        live = live_session(session_id)
        control = control_of(live)
        try:
            applied = await control.update_instructions(
                body.instructions, InstructionMode(body.mode), timeout=APPLY_WAIT_SECS
            )
        except ConnectionError as e:  # a session process's session that is starting or ending
            raise HTTPException(status.HTTP_409_CONFLICT, f"session {live.id!r}: {e}") from e
        logger.bind(session_id=live.id).info(
            f"Admin API: instructions {'replaced' if body.mode == 'replace' else 'appended'} "
            f"({len(body.instructions)} chars); "
            f"{'applied' if applied else 'queued'}"
        )
        return ContextUpdateResult(
            id=live.id, mode=body.mode, instructions=control.instructions, applied=applied
        )

    @router.post(
        "/{session_id}/say",
        response_model=SayResult,
        status_code=status.HTTP_202_ACCEPTED,
        responses={**not_found, **conflict, **BODY_RESPONSES},
        summary="Make the bot say a text now",
    )
    async def say(session_id: str, body: SayRequest, request: Request):
        if (answer := await elsewhere(request, session_id, body)) is not None:
            return answer
        live = live_session(session_id)
        try:
            await control_of(live).say(body.text)
        except ConnectionError as e:
            raise HTTPException(status.HTTP_409_CONFLICT, f"session {live.id!r}: {e}") from e
        return SayResult(id=live.id, queued=True)

    @router.delete(
        "/{session_id}",
        response_model=EndResult,
        responses={**not_found, **conflict},
        summary="End a session",
        description="Its client's socket closes with 1000 and a reason.",
    )
    async def end_session(session_id: str, request: Request):
        if (answer := await elsewhere(request, session_id)) is not None:
            return answer
        live = live_session(session_id)
        control = control_of(live)
        task = live.task
        try:
            await control.end()
        except ConnectionError:  # its session process is already on its way out
            pass
        graceful = await _finished(task, END_GRACE_SECS)
        if not graceful:
            logger.bind(session_id=live.id).warning(
                "Admin API: session did not end in time; cancelling"
            )
            await control.cancel()
            if not await _finished(task, 5.0) and task is not None:
                task.cancel()
                await _finished(task, 5.0)
        logger.bind(session_id=live.id).info("Admin API: session ended")
        return EndResult(id=live.id, ended=True, graceful=graceful)

    return router


async def _finished(task: asyncio.Task | None, timeout: float) -> bool:
    if task is None:
        return True
    done, _ = await asyncio.wait({task}, timeout=timeout)
    return bool(done)
