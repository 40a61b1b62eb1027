"""Daily REST API (rooms and meeting tokens) over loopback HTTP.

Follows (as read 2026-12-04): https://docs.daily.co/reference/rest-api (auth and errors),
https://docs.daily.co/reference/rest-api/rooms/create-room, .../rooms/config (room
properties: `exp`, `eject_at_room_exp`, ...), .../rooms/get-room-config,
.../rooms/delete-room, https://docs.daily.co/reference/rest-api/meeting-tokens/create-meeting-token,
and the models Pipecat's `DailyRESTHelper` parses (`pipecat.transports.daily.utils`):

- Auth: `Authorization: Bearer <key>`. No header at all → HTTP 400
  `{"error": "authorization-header-error", ...}`; a bad key → HTTP 401
  `{"error": "authentication-error", "info": ...}`.
- Room properties are checked as Daily checks them: `exp` a Unix time in the future,
  booleans (`eject_at_room_exp`, ...) booleans; a bad one → HTTP 400.
- `POST /rooms` with optional `name` (only `[A-Za-z0-9_-]`, at most 128 characters,
  random by default), `privacy` ("public" | "private", default "public") and
  `properties`; returns the room object `{id, name, api_created, privacy, url,
  created_at, config}` (`config`: the properties that were set). A taken name or bad
  field → HTTP 400 `{"error": "invalid-request-error", "info": ...}`.
- `GET /rooms/{name}` → the room object, or HTTP 404 `{"error": "not-found", ...}`.
- `DELETE /rooms/{name}` → `{"deleted": true, "name": ...}`, or HTTP 404.
- `POST /meeting-tokens` with `{"properties": {room_name, is_owner, exp, ...}}` →
  `{"token": <JWT>}` (HS256, signed with the peer's key, payload with Daily's
  abbreviated claims: `r` room, `o` owner, `exp`, `nbf`, `u` user name, `ud` user id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from datetime import UTC, datetime

from aiohttp import web

from tests.peers._server import PeerServer
from tests.peers.faults import Fault, malformed_payload

ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
TOKEN_CLAIMS = {"room_name": "r", "is_owner": "o", "exp": "exp", "nbf": "nbf", "user_name": "u"}
TOKEN_CLAIMS |= {"user_id": "ud", "eject_at_token_exp": "ejt", "eject_after_elapsed": "eje"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DailyPeer(PeerServer):
    name = "daily"

    def __init__(self, *, api_key: str | None = None, domain: str = "loopback-peer"):
        super().__init__(api_key=api_key)
        self.domain = domain
        self.rooms: dict[str, dict] = {}
        self.tokens: list[dict] = []  # the properties of every token issued

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/rooms", self._create_room)
        app.router.add_get("/rooms/{name}", self._get_room)
        app.router.add_delete("/rooms/{name}", self._delete_room)
        app.router.add_post("/meeting-tokens", self._create_token)

    def error_body(self, status: int, message: str) -> dict:
        kind = {
            400: "invalid-request-error",
            401: "authentication-error",
            404: "not-found",
            429: "rate-limit-error",
        }.get(status, "server-error")
        return {"error": kind, "info": message}

    async def _start(self, request: web.Request):
        """Record, authenticate and apply a fault: (body, spec, early response)."""
        rec = await self.record(request)
        if "Authorization" not in request.headers:
            missing = web.json_response(
                {"error": "authorization-header-error", "info": "Authorization header missing"},
                status=400,
            )
            return rec.body, None, missing
        if not self.bearer(request) or not self.key_ok(self.bearer(request)):
            rejected = self.error_response(401, "authorization header missing or invalid")
            return rec.body, None, rejected
        spec, response = await self.http_fault(request)
        return rec.body, spec, response

    def _json(self, payload: dict, spec) -> web.Response:
        if spec is not None and spec.kind is Fault.MALFORMED:
            return web.Response(
                text=malformed_payload(spec.variant, {"name": 42, "url": None}),
                content_type="application/json",
            )
        return web.json_response(payload)

    async def _create_room(self, request: web.Request):
        body, spec, response = await self._start(request)
        if response is not None:
            return response
        body = body if isinstance(body, dict) else {}
        name = body.get("name") or secrets.token_urlsafe(12).replace("_", "x")[:16]
        privacy = body.get("privacy", "public")
        properties = body.get("properties") or {}
        if not isinstance(name, str) or not ROOM_NAME.match(name):
            return self.error_response(400, f"invalid room name {name!r}")
        if privacy not in ("public", "private"):
            return self.error_response(400, "privacy must be 'public' or 'private'")
        if not isinstance(properties, dict):
            return self.error_response(400, "properties must be an object")
        problem = self._invalid_properties(properties)
        if problem:
            return self.error_response(400, problem)
        if name in self.rooms:
            return self.error_response(400, f"a room named {name} already exists")
        room = {
            "id": str(uuid.uuid4()),
            "name": name,
            "api_created": True,
            "privacy": privacy,
            "url": f"https://{self.domain}.daily.co/{name}",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "config": properties,
        }
        self.rooms[name] = room
        await self.changed()
        return self._json(room, spec)

    @staticmethod
    def _invalid_properties(properties: dict) -> str | None:
        exp = properties.get("exp")
        if exp is not None and (not isinstance(exp, (int, float)) or exp <= time.time()):
            return f"exp must be a Unix time in the future, not {exp!r}"
        for flag in ("eject_at_room_exp", "enable_chat", "enable_prejoin_ui", "start_video_off"):
            if flag in properties and not isinstance(properties[flag], bool):
                return f"{flag} must be a boolean"
        return None

    async def _get_room(self, request: web.Request):
        _, spec, response = await self._start(request)
        if response is not None:
            return response
        room = self.rooms.get(request.match_info["name"])
        if room is None:
            return self.error_response(404, f"room {request.match_info['name']} not found")
        return self._json(room, spec)

    async def _delete_room(self, request: web.Request):
        _, spec, response = await self._start(request)
        if response is not None:
            return response
        name = request.match_info["name"]
        if self.rooms.pop(name, None) is None:
            return self.error_response(404, f"room {name} not found")
        await self.changed()
        return self._json({"deleted": True, "name": name}, spec)

    async def _create_token(self, request: web.Request):
        body, spec, response = await self._start(request)
        if response is not None:
            return response
        properties = (body or {}).get("properties", {}) if isinstance(body, dict) else None
        if not isinstance(properties, dict):
            return self.error_response(400, "properties must be an object")
        unknown = set(properties) - set(TOKEN_CLAIMS) - {
            "enable_screenshare",
            "start_video_off",
            "start_audio_off",
            "enable_recording",
            "enable_prejoin_ui",
            "start_cloud_recording",
            "permissions",
        }
        if unknown:
            return self.error_response(400, f"unknown token properties {sorted(unknown)}")
        claims = {TOKEN_CLAIMS[k]: v for k, v in properties.items() if k in TOKEN_CLAIMS}
        claims["iat"] = int(time.time())
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims).encode())
        secret = (self.api_key or "loopback").encode()
        signature = _b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        self.tokens.append(properties)
        await self.changed()
        return self._json({"token": f"{header}.{payload}.{signature}"}, spec)
