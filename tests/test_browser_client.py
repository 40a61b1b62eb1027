"""The web client (web/client) in Debian's Chromium against a server played by the test.

The built page is served as static files and the server is played by Playwright routes:
interruptions flushing WebSocket playback, the messages for a refused session, an
unreachable server and a denied microphone, a dropped WebSocket resuming its conversation.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

from tests.support.browser import (
    Caller,
    needs_chromium,
)

pytestmark = needs_chromium


class StaticSite:
    """The built client as plain static files: no models, no sessions."""

    def __init__(self, root: Path):
        handler = functools.partial(QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def tail(self) -> str:
        return "(static site: no server log)"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def static_site(client_bundle):
    site = StaticSite(client_bundle.parent)
    yield site
    site.stop()


def healthy(page) -> None:
    page.route("**/api/health", lambda route: route.fulfill(json={"status": "ok", "sessions": 0}))


def frame_bytes(**fields) -> bytes:
    """A Pipecat protobuf frame, e.g. frame_bytes(message={"data": "..."})."""
    from pipecat.frames.protobufs import frames_pb2

    frame = frames_pb2.Frame()
    for kind, values in fields.items():
        getattr(frame, kind).SetInParent()
        for name, value in values.items():
            setattr(getattr(frame, kind), name, value)
    return frame.SerializeToString()


def rtvi_bytes(type_: str, data: dict | None = None, id_: str = "test") -> bytes:
    message = {"label": "rtvi-ai", "type": type_, "id": id_, "data": data or {}}
    return frame_bytes(message={"data": json.dumps(message)})


def tone_frames(seconds: float, rate: int = 24000, frame_ms: int = 40) -> list[bytes]:
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    step = rate * frame_ms // 1000
    return [
        frame_bytes(
            audio={"audio": pcm[i : i + step].tobytes(), "sample_rate": rate, "num_channels": 1}
        )
        for i in range(0, len(pcm), step)
    ]


class FakeBotSocket:
    """Plays the server's `/ws` for one page: bot-ready on client-ready, or a refusal of the
    next socket the page opens (`refuse`). `urls`: every socket's URL, in order."""

    def __init__(self, page, refuse: tuple[int, str] | None = None):
        self.ws = None
        self.refuse = refuse
        self.urls: list[str] = []
        page.route_web_socket("**/ws*", self._accept)

    def _accept(self, ws) -> None:
        self.ws = ws
        self.urls.append(ws.url)
        refuse, self.refuse = self.refuse, None
        ws.on_message(lambda message: self._on_message(ws, message, refuse))

    def _on_message(self, ws, message, refuse: tuple[int, str] | None) -> None:
        from pipecat.frames.protobufs import frames_pb2

        if refuse:
            # Like the server: the socket is open (the page spoke), then closed with a reason.
            ws.close(code=refuse[0], reason=refuse[1])
            return
        if not isinstance(message, bytes):
            return
        frame = frames_pb2.Frame.FromString(message)
        if frame.WhichOneof("frame") == "message":
            rtvi = json.loads(frame.message.data)
            if rtvi.get("type") == "client-ready":
                ws.send(rtvi_bytes("bot-ready", {"version": "2.2.0"}, rtvi.get("id", "ready")))

    def send(self, data: bytes) -> None:
        assert self.ws is not None, "the page has not opened the WebSocket"
        self.ws.send(data)


@contextlib.contextmanager
def connected_to_a_played_bot(site, playwright):
    """A page connected over WebSocket to a bot the test plays (`FakeBotSocket`):
    (caller, bot), the browser closed after."""
    caller = Caller(playwright, site, None, "websocket")
    try:
        healthy(caller.page)
        bot = FakeBotSocket(caller.page)
        caller.connect()
        caller.wait_connected()
        yield caller, bot
    finally:
        caller.close()


@pytest.mark.parametrize("signal", ["interruption-frame", "bot-interrupted"])
def test_websocket_playback_stops_on_interruption(static_site, playwright, signal):
    """3 s of bot audio queued, an interruption after ~0.6 s: the rest is dropped unplayed,
    whether the server's in-band InterruptionFrame or RTVI bot-interrupted says so, and
    the next answer still plays."""
    with connected_to_a_played_bot(static_site, playwright) as (caller, bot):

        bot.send(rtvi_bytes("bot-started-speaking"))
        said = "Engines burn fuel."
        progress = {"accumulated_text": said, "remaining_text": ""}
        bot.send(
            rtvi_bytes(
                "bot-output",
                {
                    "text": said,
                    "segment_id": 1,
                    "will_be_spoken": True,
                    "spoken_status": "completed",
                    "spoken_progress": progress,
                },
            )
        )
        for frame in tone_frames(3.0):
            bot.send(frame)
        caller.wait(
            "() => window.voiceAgent.stats.playedAudioMs > 600", "playback to start", 20_000
        )
        played_before = caller.agent()["stats"]["playedAudioMs"]
        bot.send(
            frame_bytes(interruption={})
            if signal == "interruption-frame"
            else rtvi_bytes("bot-interrupted")
        )
        caller.wait(
            "() => window.voiceAgent.stats.flushedAudioMs > 0", "the player to flush", 10_000
        )

        stats = caller.agent()["stats"]
        assert stats["receivedAudioMs"] == pytest.approx(3000, abs=1)
        # Stopped where it was (give or take a report interval and the round trip)...
        assert stats["playedAudioMs"] - played_before < 250
        # ...and the rest was dropped: nothing is left to play.
        assert stats["playedAudioMs"] + stats["flushedAudioMs"] == pytest.approx(3000, abs=1)
        assert stats["interruptions"] == 1
        bubble = caller.agent()["transcript"][-1]
        assert bubble["role"] == "bot" and bubble["text"] == said
        # RTVI bot-interrupted also ends the bot's bubble as cut off.
        assert bubble.get("interrupted", False) == (signal == "bot-interrupted")

        # The next answer is not swallowed by the flush.
        for frame in tone_frames(0.6):
            bot.send(frame)
        caller.wait(
            f"() => window.voiceAgent.stats.playedAudioMs >= {stats['playedAudioMs'] + 590}",
            "the next answer to play",
            20_000,
        )
        assert caller.page_errors == []


def expect_error(caller: Caller, kind: str, text: str, timeout: int = 30_000) -> str:
    caller.wait(
        f"() => window.voiceAgent.errors.some(e => e.kind === '{kind}')",
        f"a '{kind}' error",
        timeout,
    )
    caller.wait("() => window.voiceAgent.state === 'disconnected'", "the page to give up", timeout)
    message = caller.page.inner_text("#error")
    assert caller.page.locator("#error").is_visible()
    assert text.lower() in message.lower(), message
    assert caller.page.locator("#connect").is_enabled()
    assert not caller.agent()["connected"]
    return message


def test_refused_websocket_session(static_site, playwright):
    """The server is full: it accepts the socket and closes it with 1013 and a reason."""
    caller = Caller(playwright, static_site, None, "websocket")
    try:
        healthy(caller.page)
        FakeBotSocket(caller.page, refuse=(1013, "The server is at its limit of 8 live sessions"))
        caller.connect()
        message = expect_error(caller, "refused", "refused")
        assert "limit of 8 live sessions" in message
    finally:
        caller.close()


def test_refused_webrtc_session(static_site, playwright):
    """The server is full: /api/offer answers 503 with a detail."""
    caller = Caller(playwright, static_site, None, "webrtc")
    try:
        healthy(caller.page)
        caller.page.route(
            "**/api/offer",
            lambda route: route.fulfill(
                status=503, json={"detail": "The server is at its limit of 8 live sessions"}
            ),
        )
        caller.connect()
        message = expect_error(caller, "refused", "refused", timeout=60_000)
        assert "limit of 8 live sessions" in message
    finally:
        caller.close()


def test_server_ends_websocket_session(static_site, playwright):
    """Ended by the server (1000): reported, and never resumed, ticket or not."""
    with connected_to_a_played_bot(static_site, playwright) as (caller, bot):
        data = {"type": "session", "session_id": "s", "transport": "websocket", "resume_token": "t"}
        bot.send(rtvi_bytes("server-message", data))
        caller.wait("() => window.voiceAgent.sessionId === 's'", "the session message")
        bot.ws.close(code=1000, reason="idle for 300 s")
        message = expect_error(caller, "server", "the server ended the session")
        assert len(bot.urls) == 1, bot.urls
        assert "idle for 300 s" in message


def test_a_dropped_websocket_resumes_its_conversation(static_site, playwright):
    """The connection drops (here: the session's process failed, 1011) while the server
    keeps the conversation: the page reconnects with the ticket of the server's `session`
    message and carries on with its transcript; a resume the server refuses ends the
    session with why."""
    from urllib.parse import parse_qs, urlparse

    def session_message(session_id: str, token: str) -> None:
        data = {"type": "session", "session_id": session_id, "transport": "websocket"}
        bot.send(rtvi_bytes("server-message", {**data, "resume_token": token}))
        caller.wait(f"() => window.voiceAgent.sessionId === '{session_id}'", "the session message")

    def asked_to_resume(url: str) -> dict:
        return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}

    with connected_to_a_played_bot(static_site, playwright) as (caller, bot):
        session_message("first", "token-1")
        said = {"text": "My name is Ada.", "final": True, "user_id": "", "timestamp": ""}
        bot.send(rtvi_bytes("user-transcription", said))
        caller.wait("() => window.voiceAgent.transcript.length === 1", "the user's words")

        bot.ws.close(code=1011, reason="the session's process failed")
        caller.wait("() => window.voiceAgent.reconnects === 1", "the conversation resumed")
        assert len(bot.urls) == 2 and asked_to_resume(bot.urls[1]) == {
            "session_id": "first",
            "resume_token": "token-1",
        }, bot.urls
        agent = caller.agent()
        assert agent["connected"] and agent["errors"] == [], agent
        assert agent["transcript"][0]["text"] == "My name is Ada."
        assert "resumed" in caller.page.inner_text("#session-info")

        # The resumed session has a ticket of its own; the server no longer has it.
        session_message("second", "token-2")
        bot.refuse = (1008, "no conversation 'second' to resume")
        bot.ws.close(code=1011, reason="the session's process failed")
        message = expect_error(caller, "server", "could not be resumed")
        assert "no conversation 'second' to resume" in message
        assert asked_to_resume(bot.urls[-1])["resume_token"] == "token-2"
        assert caller.agent()["transcript"][0]["text"] == "My name is Ada."  # kept to read


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_unreachable_server(static_site, playwright, transport):
    caller = Caller(playwright, static_site, None, transport)
    try:
        caller.page.route("**/api/health", lambda route: route.abort("connectionrefused"))
        caller.connect()
        expect_error(caller, "unreachable", "unreachable")
    finally:
        caller.close()


def test_microphone_denied(static_site, playwright):
    """No fake permission UI: headless Chromium refuses the mic (NotAllowedError)."""
    caller = Caller(playwright, static_site, None, "websocket", allow_mic=False)
    try:
        healthy(caller.page)
        caller.connect()
        expect_error(caller, "mic-denied", "microphone access was denied")
    finally:
        caller.close()


def test_page_shows_what_the_server_says(static_site, playwright):
    """Interim user text replaced by the final, spoken bot text, state badge, latency panel."""
    with connected_to_a_played_bot(static_site, playwright) as (caller, bot):

        def server_message(data: dict) -> None:
            bot.send(rtvi_bytes("server-message", data))

        server_message({"type": "session", "session_id": "abc123", "transport": "websocket"})
        bot.send(rtvi_bytes("user-started-speaking"))
        bot.send(
            rtvi_bytes(
                "user-transcription",
                {"text": "What is the", "final": False, "user_id": "", "timestamp": ""},
            )
        )
        caller.wait(
            """() => window.voiceAgent.transcript.some(
                 e => e.role === 'user' && !e.final && e.text === 'What is the')""",
            "the interim user text",
            10_000,
        )
        assert caller.page.locator("#transcript li.user.interim").count() == 1
        final = {
            "text": "What is the capital of France?",
            "final": True,
            "user_id": "",
            "timestamp": "",
        }
        bot.send(rtvi_bytes("user-transcription", final))
        server_message({"type": "state", "state": "thinking"})
        caller.wait("() => window.voiceAgent.state === 'thinking'", "the thinking state", 10_000)
        assert caller.page.inner_text("#state").strip().lower() == "thinking"

        server_message({"type": "state", "state": "speaking"})
        bot.send(rtvi_bytes("bot-started-speaking"))
        segment = {"segment_id": 7, "output_type": "sentence", "will_be_spoken": True}
        bot.send(
            rtvi_bytes(
                "bot-output",
                {**segment, "text": "The capital of France is Paris.", "spoken_status": "new"},
            )
        )
        bot.send(
            rtvi_bytes(
                "bot-output",
                {
                    **segment,
                    "text": "The capital of France is Paris.",
                    "spoken_status": "completed",
                    "spoken_progress": {
                        "accumulated_text": "The capital of France is Paris.",
                        "remaining_text": "",
                    },
                },
            )
        )
        bot.send(rtvi_bytes("bot-stopped-speaking"))
        server_message({"type": "state", "state": "listening"})
        record = {
            "type": "turn-metrics",
            "session_id": "abc123",
            "turn": 1,
            "user_text": final["text"],
            "bot_text": "The capital of France is Paris.",
            "interrupted": False,
            "stages_ms": {
                "vad": 200.0,
                "stt": 310.5,
                "turn": 2.0,
                "llm_ttft": 420.0,
                "tts_ttfb": 180.0,
                "voice_to_voice": 1234.5,
            },
        }
        server_message(record)
        caller.wait(
            "() => window.voiceAgent.turns.length === 1 && window.voiceAgent.state === 'listening'",
            "the turn's metrics",
            10_000,
        )

        agent = caller.agent()
        mic = agent["mic"]
        assert mic["echoCancellation"] and mic["noiseSuppression"] and mic["autoGainControl"]
        assert agent["sessionId"] == "abc123"
        assert agent["transcript"] == [
            {"role": "user", "text": "What is the capital of France?", "final": True},
            {"role": "bot", "text": "The capital of France is Paris.", "final": True},
        ]
        assert agent["turns"] == [record]
        latest = caller.page.inner_text("#latency-latest")
        assert "1.2 s" in latest and "311 ms" in latest  # voice-to-voice, STT
        assert caller.page.locator("#latency-latest .v2v dd").inner_text() == "1.2 s"
        # A stage that did not happen is shown as absent, not as 0.
        tool = caller.page.locator("#latency-latest div", has_text="Tool").locator("dd")
        assert tool.inner_text() == "—"
        assert caller.page_errors == []
