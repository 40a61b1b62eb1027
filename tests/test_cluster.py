"""Cluster mode (REDIS_URL): server processes on loopback ports sharing one private Redis.

Each node is `python -m bot serve` with every stage on its cloud provider, pointed at the
loopback peers (Deepgram hears the client's espeak-ng question, Groq records each LLM
request, Cartesia speaks). What one node is asked about a session of another, the other
answers.
"""

from __future__ import annotations

import httpx
import pytest

from bench.voices import VoiceUnavailable, synthesize
from tests.support.nodes import CloudPeers, nodes
from tests.support.polling import until
from web.ws_client import AgentClient

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def question():
    try:
        return synthesize(QUESTION, "espeak-us-f")
    except VoiceUnavailable as e:
        pytest.skip(f"espeak-ng is needed to speak the question: {e}")


async def session_of(client: AgentClient) -> str:
    assert await client.wait_for(lambda r: r.server_messages("session"), 20), "no session message"
    return client.received.server_messages("session")[0]["session_id"]


async def ask(client: AgentClient, audio, peers: CloudPeers, turns: int) -> dict:
    """One spoken question; the LLM request it caused, as the Groq peer received it."""
    before = len(peers.groq.completions)
    peers.deepgram.script("what is the capital of France")
    await client.speak(audio)
    assert await client.silence_until(lambda r: len(r.turns) >= turns, 30), client.received.turns
    await peers.groq.wait_for(lambda: len(peers.groq.completions) > before, 10, "an LLM request")
    return peers.groq.completions[-1]


def system_of(request: dict) -> str:
    assert request["messages"][0]["role"] == "system"
    return request["messages"][0]["content"]


async def test_any_node_lists_and_steers_a_session_of_another(redis_server, question):
    async with CloudPeers() as peers, nodes(peers, redis_server.url, "a", "b") as (a, b), \
            httpx.AsyncClient(timeout=30) as http:
        listed_nodes = (await http.get(f"{a.url}/api/nodes")).json()
        assert [(n["id"], n["url"], n["sessions"]) for n in listed_nodes] == [(a.id, a.url, 0), (b.id, b.url, 0)]

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
            assert system_of(await ask(client, question, peers, 2)).endswith("Say banana.")

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


async def test_a_dead_node_leaves_the_registry_and_redis_going_away_ends_no_session(
        redis_server, question):
    async with CloudPeers() as peers, nodes(peers, redis_server.url, "a", "b",
                                            cluster_ttl_secs=3) as (a, b), \
            httpx.AsyncClient(timeout=30) as http, \
            AgentClient(a.ws_url) as on_a, AgentClient(b.ws_url) as on_b:
        a_id, b_id = await session_of(on_a), await session_of(on_b)

        def listed(node):
            return lambda: {s["id"] for s in httpx.get(f"{node.url}/api/sessions").json()}
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
        nodes_of_a = lambda: [n["id"] for n in httpx.get(f"{a.url}/api/nodes").json()]  # noqa: E731
        await until(lambda: nodes_of_a() == ["a", "b"], 10, "both nodes to be back")
        r = await http.put(f"{a.url}/api/sessions/{b_id}/context", json={"instructions": "Hi."})
        assert r.status_code == 200, r.text

        # B dies: a call for its session says so at once; within the TTL it is gone.
        b.kill()
        await b.wait_exit()
        r = await http.put(f"{a.url}/api/sessions/{b_id}/context", json={"instructions": "Hi."})
        assert r.status_code == 504 and "'b'" in r.json()["detail"], r.text
        await until(lambda: listed(a)() == {a_id}, 5, "B's session to leave the registry")
        assert nodes_of_a() == ["a"]
        r = await http.put(f"{a.url}/api/sessions/{b_id}/context", json={"instructions": "Hi."})
        assert r.status_code == 404, r.text
