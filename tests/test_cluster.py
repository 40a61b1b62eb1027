"""Cluster mode (REDIS_URL): server processes on loopback ports sharing one private Redis.

Each node is `python -m bot serve` with every stage on its cloud provider, pointed at the
loopback peers (Deepgram hears the client's espeak-ng question, Groq records each LLM
request, Cartesia speaks). What one node is asked about a session of another, the other
answers.
"""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest
import redis.asyncio as redis

from bench.voices import VoiceUnavailable, synthesize
from tests.peers.faults import Fault
from tests.support.nodes import CloudPeers, Node, nodes
from tests.support.polling import until, until_async
from tests.support.redis_server import RedisServer
from web.ws_client import AgentClient

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
async def pair():
    """Nodes A and B on one Redis, shared by the tests that leave them as they found them
    (the draining test, which ends B, comes last)."""
    async with RedisServer() as redis_server, CloudPeers() as peers, \
            nodes(peers, redis_server.url, "a", "b") as (a, b):
        yield redis_server, peers, a, b


@pytest.fixture(scope="module")
def question():
    try:
        return synthesize(QUESTION, "espeak-us-f")
    except VoiceUnavailable as e:
        pytest.skip(f"espeak-ng is needed to speak the question: {e}")


async def session_of(client: AgentClient) -> str:
    assert await client.wait_for(lambda r: r.server_messages("session"), 20), "no session message"
    return client.received.server_messages("session")[0]["session_id"]


async def ask(client: AgentClient, audio, peers: CloudPeers, turns: int,
              words: str = "what is the capital of France") -> dict:
    """One spoken question (heard as `words`); the LLM request it caused, as the Groq peer
    received it."""
    before = len(peers.groq.completions)
    peers.deepgram.script(words)
    await client.speak(audio, realtime=False)
    assert await client.silence_until(lambda r: len(r.turns) >= turns, 30), client.received.turns
    await peers.groq.wait_for(lambda: len(peers.groq.completions) > before, 10, "an LLM request")
    return peers.groq.completions[-1]


async def dashboard_events(http: httpx.AsyncClient, node: Node) -> dict:
    """The first `turn` event on `node`'s dashboard stream."""
    async with http.stream("GET", f"{node.url}/api/events") as stream:
        event = None
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "turn":
                return json.loads(line[6:])
    raise AssertionError("the event stream ended without a turn")


def system_of(request: dict) -> str:
    assert request["messages"][0]["role"] == "system"
    return request["messages"][0]["content"]


REMEMBER = "please remember that my dog is called Rex"
FACT = "my dog is called Rex"
NOTES = "The user has a dog called Rex."


def memory_of(node: Node, user: str) -> dict:
    r = httpx.get(f"{node.url}/api/users/{user}/memory")
    return r.json() if r.status_code == 200 else {}


def facts_of(node: Node, user: str) -> list[str] | None:
    return memory_of(node, user).get("facts")


async def first_instructions(node: Node, user: str, audio, peers: CloudPeers) -> str:
    """The system instructions of a new session of `user` on `node`, as its first LLM
    request carried them."""
    async with AgentClient(f"{node.ws_url}?user_id={user}") as client:
        await session_of(client)
        return system_of(await ask(client, audio, peers, 1))


async def test_one_node_without_redis_keeps_memory_in_sqlite_and_can_turn_it_off(question):
    async with CloudPeers() as peers, httpx.AsyncClient(timeout=30) as http, \
            nodes(peers, None, "solo", "forgetful",
                  only={"forgetful": {"memory_enabled": "false"}}) \
            as (solo, forgetful):
        async with AgentClient(f"{solo.ws_url}?user_id=u-42") as client:
            await session_of(client)
            await ask(client, question, peers, 1, REMEMBER)
        await until(lambda: facts_of(solo, "u-42") == [FACT], 10, "the fact to be kept")
        assert solo.memory_file.exists()
        assert FACT in await first_instructions(solo, "u-42", question, peers)
        # No cluster here: no node list, sessions without a node.
        assert (await http.get(f"{solo.url}/api/nodes")).status_code == 404
        # A user id that is not an opaque id is refused with the reason.
        async with AgentClient(f"{solo.ws_url}?user_id=no%20spaces") as client:
            await until(lambda: client.closed, 10, "the socket to close")
            assert client.close_code == 1008 and "user_id" in client.close_reason
        async with AgentClient(f"{forgetful.ws_url}?user_id=u-42") as client:
            await session_of(client)
            await ask(client, question, peers, 1, REMEMBER)
        assert not forgetful.memory_file.exists()
        assert (await http.get(f"{forgetful.url}/api/users/u-42/memory")).status_code == 404


async def test_a_dead_nodes_sessions_leave_the_registry_and_resume_on_another(
        redis_server, question):
    async with CloudPeers() as peers, nodes(peers, redis_server.url, "a", "b", cluster_ttl_secs=3,
                                            cluster_call_timeout_secs=1.5) as (a, b), \
            httpx.AsyncClient(timeout=30) as http, \
            AgentClient(a.ws_url) as on_a, AgentClient(b.ws_url) as on_b:
        a_id, b_id = await session_of(on_a), await session_of(on_b)

        def listed(node):
            def ids():  # None while Redis is briefly unavailable to the node (503)
                r = httpx.get(f"{node.url}/api/sessions")
                assert r.status_code in (200, 503), r.text
                return {s["id"] for s in r.json()} if r.status_code == 200 else None
            return ids
        await until(lambda: listed(a)() == {a_id, b_id}, 10, "A to list both sessions")

        # Redis goes away: the registry answers 503 with the reason; sessions go on.
        await redis_server.stop()
        for path in ("/api/sessions", "/api/nodes", f"/api/sessions/{b_id}"):
            r = await http.get(f"{a.url}{path}")
            assert r.status_code == 503 and "Redis" in r.json()["detail"], (path, r.text)
        await ask(on_a, question, peers, 1)
        await ask(on_b, question, peers, 1)
        assert not on_a.closed and not on_b.closed

        # Redis is back (empty): the nodes rewrite their entries and answer for each other.
        await redis_server.start()
        await until(lambda: listed(a)() == {a_id, b_id}, 10, "A to list both sessions again")

        def nodes_of_a():
            return [n["id"] for n in httpx.get(f"{a.url}/api/nodes").json()]

        await until(lambda: nodes_of_a() == ["a", "b"], 10, "both nodes to be back")
        pirate = {"instructions": "You are a pirate."}
        r = await http.put(f"{a.url}/api/sessions/{b_id}/context", json=pirate)
        assert r.status_code == 200, r.text
        # B hangs (stopped): A's call for its session times out with the reason.
        b.process.send_signal(signal.SIGSTOP)
        try:
            r = await http.put(f"{a.url}/api/sessions/{b_id}/context", json=pirate)
        finally:
            b.process.send_signal(signal.SIGCONT)
        assert r.status_code == 504 and "did not answer within 1.5 s" in r.text, r.text
        # The whole conversation so far is saved for resuming (in Redis) after this turn.
        await ask(on_b, question, peers, 2, "and of Spain")
        store = redis.from_url(redis_server.url)
        await until_async(lambda: store.exists(f"voice-agent:resume:{b_id}"), 10,
                          "B to save the conversation")
        await store.aclose()

        # B dies: a call for its session says so at once; within the TTL it is gone.
        b.kill()
        await b.wait_exit()
        r = await http.put(f"{a.url}/api/sessions/{b_id}/context", json={"instructions": "Hi."})
        assert r.status_code == 504 and "'b'" in r.json()["detail"], r.text
        await until(lambda: listed(a)() == {a_id}, 5, "B's session to leave the registry")
        assert nodes_of_a() == ["a"]
        r = await http.put(f"{a.url}/api/sessions/{b_id}/context", json={"instructions": "Hi."})
        assert r.status_code == 404, r.text

        # B's client resumes on A: its conversation and instructions go on there.
        token = on_b.received.server_messages("session")[0]["resume_token"]
        async with AgentClient(f"{a.ws_url}?session_id={b_id}&resume_token=wrong") as guess:
            await until(lambda: guess.closed, 10, "a wrong token to be refused")
            assert guess.close_code == 1008 and "resume_token" in guess.close_reason
        async with AgentClient(f"{a.ws_url}?session_id={b_id}&resume_token={token}") as back:
            await session_of(back)
            request = await ask(back, question, peers, 1, "and of Italy")
            assert system_of(request) == "You are a pirate."
            assert [m["content"] for m in request["messages"][1:] if m["role"] == "user"] == \
                ["what is the capital of France", "and of Spain", "and of Italy"]
            # Each question's answer came back too (saved once it was in the context).
            assert [m["role"] for m in request["messages"][1:]] == (
                ["user", "assistant"] * 2 + ["user"])
        async with AgentClient(f"{a.ws_url}?session_id={b_id}&resume_token={token}") as again:
            await until(lambda: again.closed, 10, "a spent token to be refused")
            assert again.close_code == 1008


async def test_any_node_lists_and_steers_a_session_of_another(pair, question):
    _, peers, a, b = pair
    async with httpx.AsyncClient(timeout=30) as http:
        listed_nodes = (await http.get(f"{a.url}/api/nodes")).json()
        assert [(n["id"], n["url"], n["sessions"]) for n in listed_nodes] == [
            (a.id, a.url, 0), (b.id, b.url, 0)]

        async with AgentClient(b.ws_url) as client:
            session_id = await session_of(client)
            # Node A lists B's session, with its node; B lists it too.
            for node in (a, b):
                listed = (await http.get(f"{node.url}/api/sessions")).json()
                assert [(s["id"], s["node"], s["transport"]) for s in listed] == \
                    [(session_id, "b", "websocket")], (node.id, listed)
            first = await ask(client, question, peers, 1)
            assert "banana" not in system_of(first)

            # Through A: B's instructions change, and B's next LLM request carries them.
            r = await http.put(f"{a.url}/api/sessions/{session_id}/context",
                               json={"instructions": "Say banana.", "mode": "append"})
            assert r.status_code == 200 and r.json()["applied"], r.text
            assert r.json()["instructions"].endswith("Say banana.")
            detail = (await http.get(f"{a.url}/api/sessions/{session_id}")).json()
            assert detail["instruction_updates"] == 1 and detail["turns"] == 1, detail
            events = asyncio.create_task(dashboard_events(http, a))  # A's event stream
            assert system_of(await ask(client, question, peers, 2)).endswith("Say banana.")
            seen = await asyncio.wait_for(events, 15)  # ... carries B's turn
            assert (seen["session"]["id"], seen["session"]["node"], seen["turn"]["turn"]) == \
                (session_id, "b", 2), seen

            # Through A: B says a text now; its client hears it (Cartesia peer's audio).
            audio_before = client.received.audio_ms()
            r = await http.post(f"{a.url}/api/sessions/{session_id}/say",
                                json={"text": "Your order has shipped."})
            assert r.status_code == 202 and r.json() == {"id": session_id, "queued": True}, r.text
            assert await client.wait_for(lambda rec: rec.audio_ms() > audio_before + 300, 15)
            assert any("order has shipped" in c.text for c in peers.cartesia.contexts.values())

            # A's dashboard holds B's session with its turns.
            snapshot = (await http.get(f"{a.url}/api/dashboard")).json()
            [shown] = snapshot["sessions"]
            assert shown["id"] == session_id and shown["node"] == "b" and len(shown["history"]) == 2

            # Through A: B ends it; the client's socket closes; no node lists it.
            r = await http.delete(f"{a.url}/api/sessions/{session_id}")
            assert r.status_code == 200 and r.json()["graceful"], r.text
            await until(lambda: client.closed, 10, "the client's socket to close")
            assert client.close_code == 1000
        for node in (a, b):
            assert (await http.get(f"{node.url}/api/sessions")).json() == []
            r = await http.put(f"{node.url}/api/sessions/{session_id}/context",
                               json={"instructions": "Say banana."})
            assert r.status_code == 404, r.text


async def test_daily_rooms_are_placed_on_the_least_loaded_node(pair):
    _, peers, a, b = pair
    async with httpx.AsyncClient(timeout=60) as http:
        def sessions(node: Node) -> list[dict]:
            return httpx.get(f"{node.url}/api/sessions").json()
        await until(lambda: sessions(a) == [], 10, "the cluster to have no session")

        # Asked of A both times: one room (and its bot) on each node, answered with its URLs.
        # POST /api/connect without a body is the same as POST /api/rooms.
        placed = [(await http.post(f"{a.url}{path}")) for path in ("/api/rooms", "/api/connect")]
        assert [r.status_code for r in placed] == [200, 200], [r.text for r in placed]
        answers = [r.json() for r in placed]
        assert sorted(p["node"] for p in answers) == ["a", "b"], answers
        for answer in answers:
            node = a if answer["node"] == "a" else b
            assert answer["ws_url"] == node.ws_url and answer["url"] == node.url, answer
            assert answer["room_url"].split("/")[-1] in peers.daily.rooms and answer["token"]
        # Each bot runs on the node it was placed on (until it gives up joining the room).
        placed_bots = {p["session_id"]: p["node"] for p in answers}
        await until(lambda: {s["id"]: s["node"] for s in sessions(a)} == placed_bots, 10,
                    "A to list each bot on its node")
        # They give up on the loopback room after ~20 s (daily-python's join fails only
        # then), while the next tests run; the placement test waits for them to end.

        # The chosen node's refusals come back as they are: Daily's API failing, a bad room.
        peers.daily.faults.inject(Fault.HTTP_500, times=1)
        r = await http.post(f"{a.url}/api/connect", json={"transport": "daily"})
        assert r.status_code == 502 and "500" in r.json()["detail"], r.text
        r = await http.post(f"{a.url}/api/connect", json={"transport": "daily", "expiry_secs": 30})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["expiry_secs"], r.text
        # A page from a foreign origin may not place a session or start a room.
        for path in ("/api/connect", "/api/rooms"):
            r = await http.post(f"{a.url}{path}", headers={"Origin": "https://evil.example"})
            assert r.status_code == 403 and "ALLOWED_ORIGINS" in r.json()["detail"], r.text


async def test_a_users_memory_follows_them_to_another_node_until_deleted(pair, question):
    redis_server, peers, a, b = pair
    async with httpx.AsyncClient(timeout=30) as http:
        store = redis.from_url(redis_server.url)
        # Without a user id nothing is kept.
        async with AgentClient(a.ws_url) as anonymous:
            await session_of(anonymous)
            await ask(anonymous, question, peers, 1, REMEMBER)
        assert [k async for k in store.scan_iter(match="voice-agent:memory:*")] == []

        # On A, the user asks the agent to remember something; the connection drops. The
        # session's end has the LLM rewrite the user's summary (the next Groq request).
        async with AgentClient(f"{a.ws_url}?user_id=u-42") as client:
            await session_of(client)
            assert FACT not in system_of(await ask(client, question, peers, 1, REMEMBER))
            peers.groq.reply_text(NOTES)
        await until(lambda: facts_of(b, "u-42") == [FACT], 10, "the fact to be kept")
        await until(lambda: memory_of(b, "u-42")["summary"] == NOTES, 10, "the summary")
        assert memory_of(b, "u-42")["recent"] == [REMEMBER]
        summarized = peers.groq.completions[-1]
        assert not summarized.get("stream") and REMEMBER in str(summarized["messages"])

        # A new session on B knows it; another user's does not.
        system = await first_instructions(b, "u-42", question, peers)
        assert FACT in system and NOTES in system, system
        assert FACT not in await first_instructions(b, "u-7", question, peers)

        # Deleted through A: gone everywhere, and B's next session of the user starts blank.
        r = await http.delete(f"{a.url}/api/users/u-42/memory")
        assert r.json() == {"user_id": "u-42", "deleted": True}, r.text
        assert (await http.get(f"{b.url}/api/users/u-42/memory")).status_code == 404
        system = await first_instructions(b, "u-42", question, peers)
        assert FACT not in system and NOTES not in system, system
        await store.aclose()


async def test_a_user_named_in_client_ready_is_remembered_unless_the_url_names_one(pair, question):
    _, peers, a, b = pair
    ready = {"user_id": "u-ready"}
    async with AgentClient(a.ws_url, client_ready=ready) as client:
        await session_of(client)
        await ask(client, question, peers, 1, REMEMBER)
    await until(lambda: facts_of(b, "u-ready") == [FACT], 10, "the fact to be kept")
    # The session's end is summarised (an LLM request): done before the next session asks.
    await until(lambda: memory_of(b, "u-ready").get("summary"), 10, "the summary")
    async with AgentClient(b.ws_url, client_ready=ready) as client:
        await session_of(client)
        assert FACT in system_of(await ask(client, question, peers, 1))

    # The URL's user_id wins: what is said is kept for that user only.
    async with AgentClient(f"{a.ws_url}?user_id=u-url", client_ready=ready) as client:
        await session_of(client)
        await ask(client, question, peers, 1, "please remember that my cat is called Tom")
    await until(lambda: facts_of(a, "u-url") == ["my cat is called Tom"], 10, "the URL's user")
    assert facts_of(a, "u-ready") == [FACT]

    # A user id that is not an opaque id is refused (an RTVI error); the session goes on.
    async with AgentClient(a.ws_url, client_ready={"user_id": "no spaces"}) as client:
        assert await client.wait_for(lambda r: r.rtvi("error"), 20), client.received.messages
        assert "user_id" in client.received.rtvi("error")[0][1]["data"]["error"]
        await ask(client, question, peers, 1)
        assert not client.closed


async def test_placement_spreads_sessions_and_a_draining_node_takes_no_new_ones(pair, question):
    _, peers, a, b = pair
    async with httpx.AsyncClient(timeout=30) as http:
        def loads():
            return [n["sessions"] for n in httpx.get(f"{a.url}/api/nodes").json()]
        await until(lambda: loads() == [0, 0], 30, "both nodes to be idle")

        async def place() -> dict:
            r = await http.post(f"{a.url}/api/connect", json={"transport": "websocket"})
            assert r.status_code == 200, r.text
            return r.json()

        placed = [await place() for _ in range(4)]
        assert sorted(p["node"] for p in placed) == ["a", "a", "b", "b"], placed
        assert {p["ws_url"] for p in placed} == {a.ws_url, b.ws_url}

        async with AgentClient(b.ws_url) as staying:
            await session_of(staying)
            b.terminate()  # SIGTERM: B drains
            await until(lambda: [n["draining"] for n in httpx.get(f"{a.url}/api/nodes").json()]
                        == [False, True], 10, "A to see B draining")
            # A fills up: MAX_SESSIONS=8 counts the sessions placed on it in the last few
            # seconds, the two of the first round among them unless they have aged out.
            on_a = []
            while (r := await http.post(f"{a.url}/api/connect", json={"transport": "websocket"})
                   ).status_code == 200 and len(on_a) <= 8:
                on_a.append(r.json()["node"])
            assert set(on_a) == {"a"} and 6 <= len(on_a) <= 8, on_a
            assert r.status_code == 503 and "1 draining" in r.json()["detail"], r.text
            r = await http.post(f"{a.url}/api/rooms", json={})
            assert r.status_code == 503 and "1 draining" in r.json()["detail"], r.text
            assert httpx.get(f"{b.url}/api/health").json()["status"] == "draining"
            async with AgentClient(b.ws_url) as refused:
                await until(lambda: refused.closed, 10, "B to refuse a new session")
                assert refused.close_code == 1013 and "shutting down" in refused.close_reason
            # B's live session goes on.
            await ask(staying, question, peers, 1)
            assert b.process.poll() is None
        # Its last session over, B leaves at once.
        assert await b.wait_exit(20) == 0
        assert [n["id"] for n in (await http.get(f"{a.url}/api/nodes")).json()] == ["a"]
