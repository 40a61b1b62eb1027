"""The admin API (/api/sessions): access control, validation, and steering live sessions.

Access and validation run against the real app in-process (httpx's ASGI transport, which
sets the client address the app sees, so loopback and remote clients are both real to
`request.client.host`). Steering runs real WebSocket sessions on the real server; the LLM
is a loopback Groq peer (tests/peers/groq.py), so what each session's LLM receives —
its system instructions — is asserted on directly.
"""

from __future__ import annotations

import gc
import weakref

import httpx
import pytest
from loguru import logger

from bot.config import DEFAULT_SYSTEM_PROMPT, Settings
from bot.local.models import LocalModels
from tests.peers.groq import GroqPeer
from tests.support.fakes import FakeProviders
from tests.support.polling import until
from web.app import create_app
from web.ws_client import AgentClient

TOKEN = "admin-test-token-4f1c9"
REMOTE = ("203.0.113.7", 50123)  # TEST-NET-3: anything but loopback
BANANA = "End every answer with the word banana."


def app_with(**overrides):
    settings = Settings(_env_file=None, stt_provider="local", llm_provider="local",
                        tts_provider="local", search_provider="local", **overrides)
    return create_app(settings, LocalModels(settings), providers=FakeProviders())


def client(app, peer=("127.0.0.1", 40000)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://agent")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------
# Access
# --------------------------------------------------------------------------------------


async def test_with_a_token_every_route_needs_it_from_any_client():
    app = app_with(admin_token=TOKEN)
    calls = [
        ("GET", "/api/sessions", None),
        ("GET", "/api/sessions/abc", None),
        ("PUT", "/api/sessions/abc/context", {"instructions": "Be brief."}),
        ("POST", "/api/sessions/abc/say", {"text": "Hello."}),
        ("DELETE", "/api/sessions/abc", None),
    ]
    for peer in (("127.0.0.1", 1), REMOTE):
        async with client(app, peer) as http:
            for method, path, body in calls:
                for headers in ({}, bearer("wrong"), bearer(TOKEN + "x"),
                                {"Authorization": f"Basic {TOKEN}"}):
                    r = await http.request(method, path, json=body, headers=headers)
                    assert r.status_code == 401, (method, path, headers, r.text)
                    assert r.headers["WWW-Authenticate"] == "Bearer"
                    assert "admin token" in r.json()["detail"]
            # The right token opens it, from loopback and remote clients alike.
            r = await http.get("/api/sessions", headers=bearer(TOKEN))
            assert r.status_code == 200 and r.json() == []


@pytest.mark.parametrize(
    "method, path, opened",
    [
        ("GET", "/api/nodes", 200),
        ("GET", "/api/users/u-42/memory", 404),  # nothing kept of u-42: answered, not refused
        ("DELETE", "/api/users/u-42/memory", 200),
    ],
)
async def test_with_a_token_the_cluster_and_memory_routes_need_it_from_any_client(
        redis_server, tmp_path, method, path, opened):
    """/api/nodes (cluster mode only) and /api/users/{id}/memory are admin routes too."""
    app = app_with(admin_token=TOKEN, redis_url=redis_server.url, node_id="n1",
                   memory_path=str(tmp_path / "memory.sqlite3"))
    async with app.router.lifespan_context(app):  # the node registers itself in Redis
        for peer in (("127.0.0.1", 1), REMOTE):
            async with client(app, peer) as http:
                for headers in ({}, bearer("wrong"), bearer(TOKEN + "x"),
                                {"Authorization": f"Basic {TOKEN}"}):
                    r = await http.request(method, path, headers=headers)
                    assert r.status_code == 401, (method, path, peer, headers, r.text)
                    assert r.headers["WWW-Authenticate"] == "Bearer"
                    assert "admin token" in r.json()["detail"]
                r = await http.request(method, path, headers=bearer(TOKEN))
                assert r.status_code == opened, (method, path, peer, r.text)
                if path == "/api/nodes":
                    assert [n["id"] for n in r.json()] == ["n1"]


async def test_the_token_is_compared_in_constant_time(monkeypatch):
    import web.admin

    seen = []
    real = web.admin.hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web.admin.hmac, "compare_digest", spy)
    async with client(app_with(admin_token=TOKEN)) as http:
        assert (await http.get("/api/sessions", headers=bearer("nope"))).status_code == 401
        assert (await http.get("/api/sessions", headers=bearer(TOKEN))).status_code == 200
    assert seen == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


async def test_without_a_token_only_loopback_clients_are_answered():
    app = app_with()
    for peer in (REMOTE, ("10.0.0.5", 1), ("192.168.1.20", 1), ("2001:db8::1", 1)):
        async with client(app, peer) as http:
            r = await http.get("/api/sessions")
            assert r.status_code == 403, peer
            assert "ADMIN_TOKEN is not set" in r.json()["detail"]
            # Refused before the body is even looked at.
            r = await http.put("/api/sessions/abc/context", content=b"{not json")
            assert r.status_code == 403
    for peer in (("127.0.0.1", 1), ("127.8.9.10", 1), ("::1", 1)):
        async with client(app, peer) as http:
            assert (await http.get("/api/sessions")).status_code == 200, peer


def test_start_up_says_how_the_admin_api_is_protected_and_never_logs_the_token():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO")
    try:
        app_with()
        unprotected = [line for line in lines if "/api/sessions" in line]
        lines.clear()
        app_with(admin_token=TOKEN)
        protected = [line for line in lines if "/api/sessions" in line]
        everything = "".join(lines)
    finally:
        logger.remove(sink)
    assert any("ADMIN_TOKEN is not set" in line and "loopback" in line for line in unprotected)
    assert any("bearer token required" in line for line in protected)
    assert TOKEN not in everything


# --------------------------------------------------------------------------------------
# Unknown sessions and malformed bodies
# --------------------------------------------------------------------------------------


async def test_unknown_session_is_404_and_malformed_bodies_are_422_with_the_reason():
    async with client(app_with(admin_token=TOKEN)) as http:
        h = bearer(TOKEN)
        for method, path, body in [
            ("GET", "/api/sessions/nosuch", None),
            ("PUT", "/api/sessions/nosuch/context",
             {"instructions": "Be brief.", "mode": "append"}),
            ("POST", "/api/sessions/nosuch/say", {"text": "Hello."}),
            ("DELETE", "/api/sessions/nosuch", None),
        ]:
            r = await http.request(method, path, json=body, headers=h)
            assert (r.status_code == 404
                    and "no live session 'nosuch'" in r.json()["detail"]), (method, r.text)

        async def problem(path, **kwargs) -> str:
            kwargs.setdefault("headers", h)
            r = await http.request("PUT" if path.endswith("context") else "POST", path, **kwargs)
            assert r.status_code == 422, (kwargs, r.text)
            return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                              for e in r.json()["detail"])

        ctx, say = "/api/sessions/x/context", "/api/sessions/x/say"
        assert "body.instructions: Field required" in await problem(ctx, json={"mode": "append"})
        assert "instructions must contain some text" in await problem(
            ctx, json={"instructions": "   "})
        assert "at least 1 character" in await problem(ctx, json={"instructions": ""})
        assert "at most 4000 characters" in await problem(ctx, json={"instructions": "x" * 4001})
        assert "body.mode: Input should be 'replace' or 'append'" in await problem(
            ctx, json={"instructions": "Hi.", "mode": "prepend"})
        assert "body.instruction: Extra inputs are not permitted" in await problem(
            ctx, json={"instruction": "typo in the field name"})
        assert "JSON decode error" in await problem(
            ctx, content=b'{"instructions": ', headers={**h, "Content-Type": "application/json"})
        assert "body.instructions: Input should be a valid string" in await problem(
            ctx, json={"instructions": 42})
        assert "body.text: Field required" in await problem(say, json={})
        assert "text must contain some words" in await problem(say, json={"text": "\n"})


async def test_the_openapi_page_documents_the_admin_api():
    async with client(app_with(admin_token=TOKEN)) as http:
        spec = (await http.get("/openapi.json")).json()
    paths = spec["paths"]
    ops = {(p, m) for p, item in paths.items() for m in item if p.startswith("/api/sessions")}
    assert ops == {
        ("/api/sessions", "get"), ("/api/sessions/{session_id}", "get"),
        ("/api/sessions/{session_id}", "delete"), ("/api/sessions/{session_id}/context", "put"),
        ("/api/sessions/{session_id}/say", "post"),
    }
    ok = paths["/api/sessions/{session_id}/context"]["put"]["responses"]
    assert ok["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ContextUpdateResult")
    assert {"401", "403", "404", "422"} <= set(ok)
    assert paths["/api/sessions/{session_id}"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]["$ref"].endswith("/SessionDetail")
    assert spec["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"
    assert set(spec["components"]["schemas"]["ContextUpdate"]["properties"]) == {
        "instructions", "mode"}


# --------------------------------------------------------------------------------------
# Steering live sessions (real server, real WebSocket sessions, Groq peer as the LLM)
# --------------------------------------------------------------------------------------


def turns(n):
    return lambda r: len(r.turns) >= n


async def ask(agent: AgentClient, audio, groq: GroqPeer, n_turns: int) -> dict:
    """One spoken question; returns the chat completion request it caused."""
    before = len(groq.completions)
    await agent.speak(audio)
    assert await agent.silence_until(turns(n_turns), 30), agent.received.turns
    await groq.wait_for(lambda: len(groq.completions) > before, 10, "chat completion")
    assert len(groq.completions) == before + 1
    return groq.completions[-1]


def system_of(request: dict) -> str:
    assert request["messages"][0]["role"] == "system"
    return request["messages"][0]["content"]


async def session_id(agent: AgentClient) -> str:
    assert await agent.wait_for(lambda r: r.server_messages("session"), 20)
    return agent.received.server_messages("session")[0]["session_id"]


@pytest.mark.slow
async def test_live_context_update_changes_the_next_turn_of_that_session_only(serve_app, speech):
    question = speech("What is the capital of France?")
    async with GroqPeer(api_key="gsk-admin", default_reply="Paris is the capital.") as groq:
        async with serve_app(
            FakeProviders("stt,tts"), admin_token=TOKEN, llm_provider="cloud",
            groq_api_key="gsk-admin", groq_base_url=f"{groq.base_url}/openai/v1",
            smart_turn_enabled=False, max_sessions=4,
        ) as server, AgentClient(server.ws_url) as a, AgentClient(server.ws_url) as b:
            a_id, b_id = await session_id(a), await session_id(b)
            live_a = server.registry.get(a_id)
            async with httpx.AsyncClient(base_url=server.url, headers=bearer(TOKEN)) as http:
                listed = (await http.get("/api/sessions")).json()
                assert {s["id"] for s in listed} == {a_id, b_id}
                detail = (await http.get(f"/api/sessions/{a_id}")).json()
                assert (detail["instructions"] == DEFAULT_SYSTEM_PROMPT
                        and detail["state"] == "listening")
                assert detail["context"]["budget_tokens"] == 2048

                # A first turn in each session, before any change.
                assert system_of(await ask(a, question, groq, 1)) == DEFAULT_SYSTEM_PROMPT
                assert system_of(await ask(b, question, groq, 1)) == DEFAULT_SYSTEM_PROMPT

                # Append an instruction to A, mid-session: applied, and A's very next turn has it.
                r = await http.put(f"/api/sessions/{a_id}/context",
                                   json={"instructions": BANANA, "mode": "append"})
                assert r.status_code == 200, r.text
                assert r.json() == {"id": a_id, "mode": "append", "applied": True,
                                    "instructions": f"{DEFAULT_SYSTEM_PROMPT}\n\n{BANANA}"}
                request = await ask(a, question, groq, 2)
                assert system_of(request) == f"{DEFAULT_SYSTEM_PROMPT}\n\n{BANANA}"
                # The conversation went on (no restart): the first turn is still in A's context.
                assert [m["role"] for m in request["messages"][1:]] == ["user", "assistant", "user"]
                # B, concurrent, is untouched.
                assert system_of(await ask(b, question, groq, 2)) == DEFAULT_SYSTEM_PROMPT

                # Replace A's instructions outright; GET shows them; B still untouched.
                r = await http.put(f"/api/sessions/{a_id}/context",
                                   json={"instructions": "You are a pirate.", "mode": "replace"})
                assert r.json()["instructions"] == "You are a pirate." and r.json()["applied"]
                assert system_of(await ask(a, question, groq, 3)) == "You are a pirate."
                detail = (await http.get(f"/api/sessions/{a_id}")).json()
                assert (detail["instructions"] == "You are a pirate."
                        and detail["instruction_updates"] == 2)
                assert detail["turns"] == 3 and detail["context"]["messages"] == 6
                assert ((await http.get(f"/api/sessions/{b_id}")).json()["instructions"]
                        == DEFAULT_SYSTEM_PROMPT)

                # Say: B speaks the text now (fake voice: audio arrives), and it joins B's context.
                audio_before = len(b.received.bot_audio)
                r = await http.post(f"/api/sessions/{b_id}/say",
                                    json={"text": "Your order has shipped."})
                assert r.status_code == 202 and r.json() == {"id": b_id, "queued": True}
                assert await b.wait_for(lambda rec: len(rec.bot_audio) > audio_before, 10)
                b_context = server.registry.get(b_id).session.control.context
                await until(lambda: any("order has shipped" in str(m.get("content"))
                                             for m in b_context.messages),
                            10, "said text in B's context")

                # Delete A: it ends cleanly, its socket closes, it is gone; B lives on.
                context_a = weakref.ref(live_a.session.context)
                del live_a
                r = await http.delete(f"/api/sessions/{a_id}")
                assert r.status_code == 200 and r.json() == {
                    "id": a_id, "ended": True, "graceful": True}
                assert await a.wait_for(lambda rec: False, 5) is False and a.closed
                assert (await http.get(f"/api/sessions/{a_id}")).status_code == 404
                assert [s["id"] for s in (await http.get("/api/sessions")).json()] == [b_id]
                assert not b.closed
                # The ended session's context (its memory) is freed.
                await until(lambda: gc.collect() is not None and context_a() is None, 10,
                                 "ended session's context to be freed")
