"""Issue 14's probe, F1-F2: WebRTC offers checked before anything is reserved. F3 (slots
freed the moment a client leaves, no task outliving its session): test_session_teardown.py."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from tests.abuse.frames import session_of
from tests.support.polling import until, until_async
from tests.support.redis_server import RedisServer
from tests.webrtc_peer import WebRTCCaller, offer_sdp
from web.offers import check_offer
from web.ws_client import AgentClient

# --- F1, F2: WebRTC offers are checked before anything is reserved ---------------------------


async def test_bad_offers_are_refused_with_the_reason_and_reserve_nothing(serve):
    good = await offer_sdp()
    without_media = good.split("m=")[0]
    bad = {
        "empty SDP": ({"sdp": "", "type": "offer"}, 400, "not SDP"),
        "garbage": ({"sdp": "garbage", "type": "offer"}, 400, "not SDP"),
        "bare v=0": ({"sdp": "v=0\r\n", "type": "offer"}, 400, "0 audio m-lines"),
        "no media": ({"sdp": without_media, "type": "offer"}, 400, "0 audio m-lines"),
        "no rtcp-mux": (
            {"sdp": good.replace("a=rtcp-mux\r\n", ""), "type": "offer"},
            400,
            "a=rtcp-mux",
        ),
        "no ICE password": (
            {"sdp": good.replace("a=ice-pwd:", "a=x-pwd:"), "type": "offer"},
            400,
            "ICE",
        ),
        "two audio lines": (
            {
                "sdp": good + good[good.index("m=audio") : good.index("m=application")],
                "type": "offer",
            },
            400,
            "2 audio m-lines",
        ),
        "not a user id": (
            {"sdp": good, "type": "offer", "request_data": {"user_id": "not an id!"}},
            422,
            "user_id",
        ),
        # Pipecat's JS SDK (SmallWebRTCTransport) spells it requestData.
        "not a user id, camelCase": (
            {"sdp": good, "type": "offer", "requestData": {"user_id": "not an id!"}},
            422,
            "user_id",
        ),
        "empty type": ({"sdp": "", "type": ""}, 422, "'offer'"),
        "bogus type": ({"type": "bogus"}, 422, "sdp"),
        "an answer": ({"sdp": good, "type": "answer"}, 422, "'offer'"),
        "5 MB SDP": (
            {"sdp": "v=0\r\n" + "a=x\r\n" * 1_000_000, "type": "offer"},
            413,
            "MAX_REQUEST_BYTES",
        ),
    }
    async with serve() as server, httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for name, (body, code, reason) in bad.items():
            r = await http.post("/api/offer", json=body)
            assert r.status_code == code, (name, r.status_code, r.text[:300])
            assert reason in r.text, (name, r.text[:300])
            assert len(server.registry) == 0 and server.registry.all() == [], name
        r = await http.patch("/api/offer", json={"pc_id": "nope", "candidates": []})
        assert r.status_code == 404
        assert (await http.get("/api/health")).json()["sessions"] == 0


@pytest.mark.parametrize(
    "session_processes", [False, True], ids=["in-process", "session-processes"]
)
async def test_a_webrtc_peer_that_never_connects_is_closed_and_its_slot_freed(
        serve, session_processes):
    """An offer that is answered but never followed by a connection (F1's squatter); with
    SESSION_PROCESSES its session process exits too."""
    async with serve(webrtc_connect_timeout_secs=1.0, max_sessions=1,
                     session_processes=session_processes, session_process_spares=0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            r = await http.post("/api/offer", json={"sdp": await offer_sdp(), "type": "offer"})
            assert r.status_code == 200, r.text
            assert len(server.registry) == 1
            assert len(server.registry.processes()) == int(session_processes)
            await until(
                lambda: len(server.registry) == 0 and not server.registry.all(),
                20,
                "the unconnected session (and its process) to be closed",
            )
        # A caller that does connect keeps its session past the timeout, then frees it.
        caller = WebRTCCaller(server.url)
        try:
            r = await caller.call()
            assert r.status_code == 200, r.text
            await asyncio.wait_for(caller.connected.wait(), 20)
            await asyncio.sleep(2.5)
            assert len(server.registry) == 1 and server.registry.all()[0].transport == "webrtc"
        finally:
            await caller.hang_up()
        await until(lambda: len(server.registry) == 0, 20, "the caller's slot to be freed")
        await until(lambda: not server.registry.all(), 30, "its session (and process) to end")


@pytest.mark.parametrize(
    "session_processes", [False, True], ids=["in-process", "session-processes"]
)
async def test_a_dropped_conversation_resumes_over_webrtc_with_its_ticket_only(
        serve, models, session_processes):
    """The ticket a session gives its client (session id + resume token) resumes the
    conversation over WebRTC too, once, sessions in their own processes included; a wrong or
    spent ticket is refused with the reason and leaves no session, connection, process or
    slot behind."""
    async with serve(max_sessions=1, session_processes=session_processes,
                     session_process_spares=0) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        async with AgentClient(server.ws_url) as client:
            session_id = await session_of(client)
            token = client.received.server_messages("session")[0]["resume_token"]
            await client.speak(models.synthesize("What is the capital of France?", 16000))
            assert await client.silence_until(lambda r: r.turns, 30), client.received.turns
            said = (await http.get(f"/api/sessions/{session_id}")).json()["context"]["messages"]
        await until(lambda: len(server.registry) == 0 and not server.registry.all(), 20,
                    "the dropped session to end")

        async def offer(ticket: dict) -> httpx.Response:
            return await http.post("/api/offer", json={"sdp": await offer_sdp(), "type": "offer",
                                                       "requestData": ticket})

        r = await offer({"session_id": session_id, "resume_token": "a guess"})
        assert r.status_code == 409 and "wrong resume_token" in r.text, r.text
        assert len(server.registry) == 0 and server.registry.all() == []
        assert server.registry.processes() == []
        r = await offer({"session_id": session_id, "resume_token": ["not", "a", "string"]})
        assert r.status_code == 422 and "resume_token" in r.text, r.text

        caller = WebRTCCaller(server.url)
        try:
            r = await caller.call({"session_id": session_id, "resume_token": token})
            assert r.status_code == 200, r.text
            await asyncio.wait_for(caller.connected.wait(), 20)
            (live,) = server.registry.all()
            assert live.transport == "webrtc" and live.id != session_id
            # The question and its answer came back (a session process reports its context
            # with its first state).
            async def resumed() -> bool:
                r = await http.get(f"/api/sessions/{live.id}")
                return r.json()["context"]["messages"] == said

            assert said >= 2
            await until_async(resumed, 10, "the conversation to be resumed")
            # ... with a ticket of its own for the next drop.
            def told() -> list[dict]:
                return [m["data"] for m in caller.messages
                        if m.get("type") == "server-message" and m["data"].get("type") == "session"]

            await until(told, 10, "the session message")
            assert told()[0]["session_id"] == live.id
            assert told()[0]["resume_token"] not in ("", token)
        finally:
            await caller.hang_up()
        await until(lambda: len(server.registry) == 0 and not server.registry.all(), 20,
                    "the resumed session to end")
        r = await offer({"session_id": session_id, "resume_token": token})
        assert r.status_code == 409 and "no conversation" in r.text, r.text
        async with AgentClient(
            f"{server.ws_url}?session_id={session_id}&resume_token={token}"
        ) as again:
            await until(lambda: again.closed, 10, "a spent ticket to be refused")
            assert again.close_code == 1008 and "no conversation" in again.close_reason
        # Dropped again before any new reply: its own ticket resumes it (here over WebSocket).
        second = told()[0]
        query = f"session_id={second['session_id']}&resume_token={second['resume_token']}"
        async with AgentClient(f"{server.ws_url}?{query}") as back:
            third = await session_of(back)
            (live,) = server.registry.all()
            assert live.id == third and live.transport == "websocket"
            await until_async(resumed, 10, "the conversation to be resumed again")
        await until(lambda: len(server.registry) == 0 and not server.registry.all(), 20,
                    "the last session to end")
        assert (await http.get("/api/health")).json()["sessions"] == 0
        assert server.registry.processes() == []


@pytest.mark.parametrize("mode", ["in-process", "session-processes", "redis"])
async def test_a_conversation_resumes_for_the_window_after_its_drop_however_quiet_before(
        serve, models, mode):
    """SESSION_RESUME_SECS runs from the moment the connection drops, not from the last reply,
    and a conversation is resumable from its start: a user quiet for longer than the window
    (before any reply, or after one) and then dropped gets it back; once the window after the
    drop is over, nobody does. In this process, through session processes, and in Redis."""
    window = 2.0
    extra = {}
    if mode == "session-processes":
        extra = {"session_processes": True, "session_process_spares": 0}
    async with contextlib.AsyncExitStack() as stack:
        if mode == "redis":
            extra = {"redis_url": (await stack.enter_async_context(RedisServer())).url}
        server = await stack.enter_async_context(
            serve(session_resume_secs=window, max_new_sessions_per_minute=0, **extra))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=server.url, timeout=30))
        await _resumes_for_the_window_after_its_drop(server, http, models, window)


async def _resumes_for_the_window_after_its_drop(server, http, models, window: float) -> None:
    def ticket(client: AgentClient) -> str:
        told = client.received.server_messages("session")[-1]
        return f"session_id={told['session_id']}&resume_token={told['resume_token']}"

    async def dropped() -> None:
        await until(lambda: not server.registry.all(), 20, "the dropped session to end")

    # Quiet from the start, longer than the window; no reply ever; then the drop.
    async with AgentClient(server.ws_url) as client:
        first = await session_of(client)
        await client.silence(window * 1.5)
        again = ticket(client)
    await dropped()
    async with AgentClient(f"{server.ws_url}?{again}") as client:
        second = await session_of(client)
        assert second != first
        # A reply, then quiet again for longer than the window; then the drop.
        await client.speak(models.synthesize("What is the capital of France?", 16000))
        assert await client.silence_until(lambda r: r.turns, 30), client.received.turns
        said = (await http.get(f"/api/sessions/{second}")).json()["context"]["messages"]
        assert said >= 2
        await client.silence(window * 1.5)
        again = ticket(client)
    await dropped()
    async with AgentClient(f"{server.ws_url}?{again}") as client:
        third = await session_of(client)

        async def resumed() -> bool:
            r = await http.get(f"/api/sessions/{third}")
            return r.status_code == 200 and r.json()["context"]["messages"] == said

        await until_async(resumed, 10, "the question and its answer to come back")
        again = ticket(client)
        drop = time.monotonic()
    await dropped()

    # The window after this drop: a wrong token is refused as wrong while the conversation
    # is kept (and spends nothing), then as nothing to resume.
    async def refusal(query: str) -> str:
        async with AgentClient(f"{server.ws_url}?{query}") as probe:
            await until(lambda: probe.closed, 10, "the ticket to be refused")
            assert probe.close_code == 1008, (probe.close_code, probe.close_reason)
            return probe.close_reason

    wrong = again.replace("resume_token=", "resume_token=x")
    assert "wrong resume_token" in await refusal(wrong)

    async def over() -> bool:
        return "no conversation" in await refusal(wrong)

    await until_async(over, window + 10, "the window after the drop to pass", interval=0.2)
    assert time.monotonic() - drop >= window
    assert "no conversation" in await refusal(again)


async def test_with_session_processes_a_bad_offer_starts_no_session_process(serve):
    good = await offer_sdp()
    async with serve(session_processes=True, session_process_spares=0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            for body in (
                {"sdp": "", "type": "offer"},
                {"sdp": "v=0\r\n", "type": "offer"},
                {"sdp": "", "type": ""},
                {"sdp": good, "type": "offer", "requestData": {"user_id": "not an id!"}},
                {"sdp": good, "type": "offer",
                 "requestData": {"session_id": "s", "resume_token": "t"}},
            ):
                r = await http.post("/api/offer", json=body)
                assert r.status_code in (400, 409, 422), r.text
        assert server.app.state.spawner.waiting == 0
        assert len(server.registry) == 0 and server.registry.processes() == []


def unanswerable(offer: str) -> str:
    """`offer` with Opus at 16 kHz as its only audio codec: `check_offer` lets it through (it
    parses, has one audio m-line and names Opus), and aiortc cannot answer it (its Opus is
    48 kHz), so it fails after its slot is reserved."""
    lines = offer.split("\r\n")
    opus = next(line for line in lines if line.startswith("a=rtpmap:") and "opus/48000" in line)
    payload = opus.split()[0].split(":")[1]
    kept = []
    for line in lines:
        if line.startswith("m=audio "):
            line = " ".join(line.split()[:3] + [payload])
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            if line.split()[0].split(":")[1] != payload:
                continue
        kept.append(f"a=rtpmap:{payload} opus/16000/2" if line == opus else line)
    sdp = "\r\n".join(kept)
    check_offer(sdp)  # should the checks refuse it one day, this test needs another offer
    return sdp


@pytest.mark.parametrize(
    "session_processes", [False, True], ids=["in-process", "session-processes"]
)
async def test_an_offer_that_passes_the_checks_but_cannot_be_answered_leaves_nothing(
        serve, session_processes):
    """An offer refused only once its slot is reserved (and, with SESSION_PROCESSES, its
    session process started and handed the offer): a 400 with aiortc's reason, and the slot,
    the session and its process go."""
    sdp = unanswerable(await offer_sdp())
    async with serve(max_sessions=1, session_processes=session_processes,
                     session_process_spares=0) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for _ in range(2):  # the one slot is free again for the next offer
            r = await http.post("/api/offer", json={"sdp": sdp, "type": "offer"})
            assert r.status_code == 400, r.text
            assert "could not answer the offer" in r.text and "audio" in r.text, r.text
            assert len(server.registry) == 0, r.text
            await until(lambda: not server.registry.all(), 20, "the session and its process to go")
            assert server.registry.processes() == []
        assert (await http.get("/api/health")).json()["sessions"] == 0
        if session_processes:
            assert server.app.state.spawner.waiting == 0


async def test_a_session_that_does_not_start_after_its_answer_is_a_503_and_leaves_nothing(
        serve, monkeypatch):
    """The offer was fine but the server could not start its session (Pipecat logs the
    error and answers anyway): a 503 the schema lists, the slot freed, the answered peer closed."""
    import web.session_routes

    peers = []

    def broken_transport(connection, settings):
        peers.append(connection)
        raise RuntimeError("no transport today")

    monkeypatch.setattr(web.session_routes, "create_webrtc_transport", broken_transport)
    async with serve(max_sessions=1) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for _ in range(2):  # the one slot is free again for the next offer
            r = await http.post("/api/offer", json={"sdp": await offer_sdp(), "type": "offer"})
            assert r.status_code == 503, r.text
            assert "could not start the session" in r.text, r.text
            assert len(server.registry) == 0 and server.registry.all() == []
        assert len(peers) == 2
        assert all(peer.pc.connectionState == "closed" for peer in peers)
