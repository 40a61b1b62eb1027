"""POST /api/rooms: a Daily room and a bot in its own process, against a Daily REST peer."""

import time

import httpx
import pytest

from tests.peers.daily import DailyPeer
from tests.peers.faults import Fault
from tests.support.polling import until
from web.ws_client import AgentClient

pytestmark = pytest.mark.slow
KEY = "daily-test-key"


async def test_without_a_key_rooms_are_refused_clearly(serve_app):
    async with serve_app() as server, httpx.AsyncClient() as http:
        r = await http.post(f"{server.url}/api/rooms")
    assert r.status_code == 503 and "DAILY_API_KEY" in r.json()["detail"]


async def test_room_and_tokens_are_created_and_a_bot_process_is_spawned(serve_app, monkeypatch):
    # The session process cannot reach the (loopback) room on Daily: it must give up cleanly.
    monkeypatch.setenv("DAILY_JOIN_TIMEOUT_SECS", "3")
    async with DailyPeer(api_key=KEY) as daily:
        async with serve_app(daily_api_key=KEY, daily_api_url=daily.base_url) as server:
            async with httpx.AsyncClient(timeout=120) as http:
                r = await http.post(f"{server.url}/api/rooms")
                assert r.status_code == 200, r.text
                answer = r.json()
                assert answer["room_url"].startswith(f"https://{daily.domain}.daily.co/")
                assert answer["token"] and answer["session_id"]
                assert len(daily.rooms) == 1
                owners = sorted(bool(t.get("is_owner")) for t in daily.tokens)
                # the bot owns the room, the user does not
                assert owners == [False, True], daily.tokens
                assert [p.id for p in server.registry.processes()] == [answer["session_id"]]
                pid = server.registry.processes()[0].pid

                # It failed to join (no Daily here), exited, and freed its slot; the server lives.
                await until(lambda: not server.registry.processes(), 60,
                            "the session processes to exit")
                assert (await http.get(f"{server.url}/api/health")).status_code == 200
                assert pid not in [p.pid for p in server.registry.processes()]


async def test_a_bot_that_crashes_at_start_is_reported(serve_app, monkeypatch):
    # The session process cannot load STT.
    monkeypatch.setenv("WHISPER_MODEL_DIR", "/nonexistent/whisper")
    async with DailyPeer(api_key=KEY) as daily:
        async with serve_app(daily_api_key=KEY, daily_api_url=daily.base_url) as server:
            async with httpx.AsyncClient(timeout=120) as http:
                r = await http.post(f"{server.url}/api/rooms")
                assert r.status_code == 502, r.text
                assert "exited with code" in r.json()["detail"]
                assert len(server.registry) == 0
                assert (await http.get(f"{server.url}/api/health")).status_code == 200


async def test_daily_api_errors_and_the_session_limit(serve_app):
    async with DailyPeer(api_key=KEY) as daily:
        async with serve_app(daily_api_key=KEY, daily_api_url=daily.base_url,
                             max_sessions=1) as server:
            async with httpx.AsyncClient(timeout=60) as http:
                daily.faults.inject(Fault.HTTP_500, times=1)
                r = await http.post(f"{server.url}/api/rooms")
                assert r.status_code == 502 and "500" in r.json()["detail"]
                assert len(server.registry) == 0

                async with AgentClient(server.ws_url) as client:
                    assert await client.wait_for(lambda r: r.server_messages("session"), 20)
                    r = await http.post(f"{server.url}/api/rooms")
                    assert r.status_code == 503 and "MAX_SESSIONS" in r.json()["detail"]


class NoBotProcess:
    """BotSpawner's `spawn_daily` without a process: records the room it was given."""

    def __init__(self):
        self.rooms: list[str] = []

    async def spawn_daily(self, slot, room_url: str, token: str) -> str:
        self.rooms.append(room_url)
        return f"session-{len(self.rooms)}"


async def test_rooms_eject_everyone_when_they_expire_and_expiry_is_bounded():
    from fastapi import FastAPI

    from bot.config import Settings
    from web.rooms import MAX_ROOM_SECS, rooms_router
    from web.sessions import SessionRegistry

    async with DailyPeer(api_key=KEY) as daily:
        settings = Settings(_env_file=None, daily_api_key=KEY, daily_api_url=daily.base_url)
        app, spawner = FastAPI(), NoBotProcess()
        app.include_router(rooms_router(settings, SessionRegistry(max_sessions=4), spawner))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rooms") as http:
            r = await http.post("/api/rooms", json={"expiry_secs": 600})
            assert r.status_code == 200, r.text
            (room,) = daily.rooms.values()
            # Like Pipecat's runner: when the room expires, its participants (the bot
            # too) are removed, not left talking in a dead room.
            assert room["config"]["eject_at_room_exp"] is True
            assert room["config"]["exp"] == pytest.approx(time.time() + 600, abs=10)
            assert room["privacy"] == "private" and spawner.rooms == [room["url"]]
            for bad in (-5, 0, 59, MAX_ROOM_SECS + 1, "soon"):
                r = await http.post("/api/rooms", json={"expiry_secs": bad})
                assert r.status_code == 422, (bad, r.text)
            assert len(daily.rooms) == 1 and len(spawner.rooms) == 1


async def test_a_page_from_a_foreign_origin_may_not_start_a_room():
    from fastapi import FastAPI

    from bot.config import Settings
    from web.rooms import rooms_router
    from web.sessions import SessionRegistry

    async with DailyPeer(api_key=KEY) as daily:
        settings = Settings(_env_file=None, daily_api_key=KEY, daily_api_url=daily.base_url,
                            allowed_origins="https://app.example")
        app, spawner = FastAPI(), NoBotProcess()
        app.include_router(rooms_router(settings, SessionRegistry(max_sessions=4), spawner))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rooms") as http:
            for path in ("/api/rooms", "/api/connect"):
                r = await http.post(path, headers={"Origin": "https://evil.example"})
                assert r.status_code == 403 and "ALLOWED_ORIGINS" in r.json()["detail"], r.text
            assert not daily.rooms and not spawner.rooms
            r = await http.post("/api/rooms", headers={"Origin": "https://app.example"})
            assert r.status_code == 200, r.text
            assert len(daily.rooms) == 1 and len(spawner.rooms) == 1


async def test_a_hung_daily_api_is_a_clear_502_not_a_hung_request():
    from fastapi import FastAPI

    from bot.config import Settings
    from web.rooms import rooms_router
    from web.sessions import SessionRegistry

    async with DailyPeer(api_key=KEY) as daily:
        settings = Settings(
            _env_file=None, daily_api_key=KEY, daily_api_url=daily.base_url,
            daily_api_timeout_secs=1.0,
        )
        app, registry = FastAPI(), SessionRegistry(max_sessions=1)
        app.include_router(rooms_router(settings, registry, NoBotProcess()))
        daily.faults.inject(Fault.HANG, times=1)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rooms") as http:
            r = await http.post("/api/rooms")
            assert r.status_code == 502, r.text
            # The reservation was given back: the one session slot is free again.
            daily.faults.inject(Fault.HTTP_429, times=1)
            r = await http.post("/api/rooms")
            assert r.status_code == 502 and "429" in r.json()["detail"], r.text
