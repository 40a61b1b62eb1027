"""SESSION_PROCESSES: each WebSocket session in its own session process, seen and steered
from the server like any other; a session process that dies takes only its own session down."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from tests.peers.daily import DailyPeer
from tests.support.polling import until, until_async
from tests.support.server import turn_count
from tests.text import contains_words
from web.ws_client import AgentClient

pytestmark = pytest.mark.slow
PROCESS_READY_SECS = 90  # the session process loads Whisper, Piper and the VAD models itself


async def ready_session(server, client: AgentClient) -> dict:
    seen = await client.wait_for(lambda r: r.server_messages("session"), PROCESS_READY_SECS)
    assert seen, "no session message"
    return client.received.server_messages("session")[0]


async def test_a_websocket_session_runs_in_its_session_process_and_is_steered_from_the_server(
        serve_app, speech):
    async with serve_app(session_processes=True) as server, httpx.AsyncClient(timeout=60) as http:
        async def ready_processes() -> int:
            return (await http.get(f"{server.url}/api/health")).json()["ready_session_processes"]

        # The spare started with the server says when its models are loaded.
        await until_async(ready_processes, PROCESS_READY_SECS, "a loaded spare")
        async with AgentClient(server.ws_url) as client:
            session_id = (await ready_session(server, client))["session_id"]
            [live] = server.registry.processes()
            assert live.id == session_id and live.pid != os.getpid()
            # It took the spare loaded at start-up; another is loading behind it.
            assert server.app.state.spawner.waiting == 1
            assert await ready_processes() == 0

            # A question through the relay: heard, answered, timed.
            await client.speak(speech("What is the capital of France?"))
            assert await client.silence_until(turn_count(1), 90), client.received.turns
            turn = client.received.turns[0]
            assert contains_words(turn["user_text"], "capital", "France"), turn
            assert contains_words(turn["bot_text"], "Paris"), turn
            assert client.received.audio_ms() > 500

            # The server sees it: admin API, dashboard snapshot, Prometheus.
            listed = (await http.get(f"{server.url}/api/sessions")).json()
            assert [(s["id"], s["pid"], s["transport"]) for s in listed] == [
                (session_id, live.pid, "websocket")]
            await until(lambda: live.turns >= 1, 10,
                        "the session process's turn to reach the registry")
            snapshot = (await http.get(f"{server.url}/api/dashboard")).json()
            [shown] = snapshot["sessions"]
            assert shown["id"] == session_id and shown["history"][0]["bot_text"] == turn["bot_text"]
            assert snapshot["pid"] == os.getpid() != shown["pid"]  # the dashboard tells them apart
            metrics = (await http.get(f"{server.url}/metrics")).text
            assert "voice_agent_turns_total 1.0" in metrics, metrics[:2000]
            assert "voice_agent_live_sessions 1.0" in metrics

            # Steered over the session process's pipes: instructions, speech, then the end.
            r = await http.put(f"{server.url}/api/sessions/{session_id}/context",
                               json={"instructions": "Always answer in French.", "mode": "append"})
            assert r.status_code == 200 and r.json()["applied"], r.text
            detail = (await http.get(f"{server.url}/api/sessions/{session_id}")).json()
            assert detail["instructions"].endswith("Always answer in French.")
            assert detail["instruction_updates"] == 1 and detail["context"]["messages"] >= 2, detail

            audio_before = client.received.audio_ms()
            r = await http.post(f"{server.url}/api/sessions/{session_id}/say",
                                json={"text": "One moment please."})
            assert r.status_code == 202, r.text
            assert await client.silence_until(lambda rec: rec.audio_ms() > audio_before + 500, 30)

            r = await http.delete(f"{server.url}/api/sessions/{session_id}")
            assert r.status_code == 200 and r.json()["graceful"], r.text
            await until(lambda: client.closed, 15, "the client's WebSocket to close")
            assert client.close_code == 1000 and client.close_reason, client.close_reason
        await until(lambda: len(server.registry) == 0, 15, "the session to be released")
        with pytest.raises(ProcessLookupError):
            os.kill(live.pid, 0)  # the session process has exited (and been reaped)


async def test_a_session_process_that_dies_takes_only_its_own_session(serve_app, speech):
    async with serve_app(session_processes=True, max_sessions=2) as server:
        async with AgentClient(server.ws_url) as doomed, AgentClient(server.ws_url) as survivor:
            doomed_id = (await ready_session(server, doomed))["session_id"]
            await ready_session(server, survivor)
            doomed_pid = next(live.pid for live in server.registry.processes()
                              if live.id == doomed_id)

            os.kill(doomed_pid, signal.SIGKILL)
            await until(lambda: doomed.closed, 15, "the dead session process's client to be closed")
            assert doomed.close_code == 1011, (doomed.close_code, doomed.close_reason)
            await until(lambda: len(server.registry) == 1, 15, "the dead session to be released")

            await survivor.speak(speech("What is the capital of Japan?"))
            assert await survivor.silence_until(turn_count(1), 90), survivor.received.turns
            assert contains_words(survivor.received.turns[0]["bot_text"], "Tokyo")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{server.url}/api/health")).json()["status"] == "ok"


async def test_a_session_process_ends_when_the_server_goes(serve_app):
    """The session process's stdin is the server: when it closes, the session and the process
    end."""
    async with serve_app(session_processes=True) as server, AgentClient(server.ws_url) as client:
        await ready_session(server, client)
        [live] = server.registry.processes()
        live.remote.process.stdin.close()
        await until(lambda: client.closed, 20, "the client to be closed")
        code = await asyncio.wait_for(live.remote.process.wait(), 20)
        assert code == 0


async def test_a_daily_bot_reports_to_the_server_like_any_session(serve_app, monkeypatch):
    monkeypatch.setenv("DAILY_JOIN_TIMEOUT_SECS", "30")
    async with DailyPeer(api_key="k") as daily, \
            serve_app(daily_api_key="k", daily_api_url=daily.base_url) as server:
        async with httpx.AsyncClient(timeout=120) as http:
            answer = (await http.post(f"{server.url}/api/rooms")).json()
            listed = (await http.get(f"{server.url}/api/sessions")).json()
            assert [(s["id"], s["transport"]) for s in listed] == [(answer["session_id"], "daily")]
            assert listed[0]["pid"] != os.getpid()
            r = await http.delete(f"{server.url}/api/sessions/{answer['session_id']}")
            assert r.status_code in (200, 409), r.text
        await until(lambda: len(server.registry) == 0, 30, "the Daily session process to end")


async def test_a_session_process_fallback_is_counted_in_the_servers_metrics(serve_app, speech):
    """Cartesia fails for the session process's first answer: Piper speaks it, and the
    server's /metrics counts the session process's fallback to Piper."""
    from tests.peers import CartesiaPeer, Fault

    async with CartesiaPeer(api_key="sk-test") as cartesia:
        cartesia.faults.inject(Fault.HTTP_500, times=1)
        async with serve_app(session_processes=True, tts_provider="cloud",
                             cartesia_api_key="sk-test", cartesia_base_url=cartesia.ws_url) \
                as server, AgentClient(server.ws_url) as client:
            await ready_session(server, client)
            await client.speak(speech("What is the capital of France?"))
            assert await client.silence_until(turn_count(1), 90), client.received.turns
            assert client.received.audio_ms() > 500  # the answer was heard
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"{server.url}/metrics")).text
            fallbacks = [line for line in metrics.splitlines()
                         if line.startswith("voice_agent_fallbacks_total{")]
            assert any('stage="tts"' in line and not line.endswith(" 0.0")
                       for line in fallbacks), fallbacks


async def test_a_session_process_user_is_remembered_by_the_server_and_the_next_session(
        serve_app, speech, tmp_path):
    """Per-user memory in session processes: what the user (named in the URL) asked to be
    remembered reaches the server's store; the user's next session, named in the client's
    client-ready message this time, starts with it in its instructions."""
    fact = "my dog is called Rex"
    async with serve_app(session_processes=True, memory_path=tmp_path / "memory.sqlite3",
                         memory_summarize=False) as server, httpx.AsyncClient(timeout=60) as http:
        async with AgentClient(f"{server.ws_url}?user_id=u-7") as client:
            await ready_session(server, client)
            await client.speak(speech(f"Please remember that {fact}."))
            assert await client.silence_until(turn_count(1), 90), client.received.turns

        async def kept() -> bool:
            r = await http.get(f"{server.url}/api/users/u-7/memory")
            return r.status_code == 200 and [f.lower() for f in r.json()["facts"]] == [fact.lower()]

        await until_async(kept, 30, "the fact to be kept")
        async with AgentClient(server.ws_url, client_ready={"user_id": "u-7"}) as client:
            session_id = (await ready_session(server, client))["session_id"]
            # The server's view of a session process's instructions is refreshed with each turn.
            await client.speak(speech("What is my dog called?"))
            assert await client.silence_until(turn_count(1), 90), client.received.turns
            detail = (await http.get(f"{server.url}/api/sessions/{session_id}")).json()
            assert fact.lower() in detail["instructions"].lower(), detail["instructions"]
