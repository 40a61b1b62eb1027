"""Real-browser tests of the web client (web/client), in Debian's Chromium.

Conversations (slow): Chromium talks to a live `python -m bot serve`. The microphone is
Chromium's fake capture device playing a question synthesized by our own TTS, so the whole
path is real: getUserMedia → WebSocket or WebRTC → VAD, STT, LLM, TTS → bot audio played
in the page.

Client behaviour (fast): the built page is served as static files and the server is
played by the test (Playwright routes): interruptions flushing WebSocket playback, and the
messages for a refused session, an unreachable server and a denied microphone.

The page's `window.voiceAgent` (web/client/src/main.ts) is what the tests read; they wait
on it, never sleep.

Chromium is Debian's (`make test` installs the `chromium` package); Playwright only drives
it (`playwright install` is never needed).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import wave
from collections import deque
from pathlib import Path

import pytest

from bot.processes import stop_process
from tests.support.screenshots import keep_screenshot

playwright_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SAMPLE_RATE = 16000
# The fake device starts playing when the page opens the mic (on Connect): the lead-in
# lets the session come up and its greeting start; the question is asked over the greeting,
# which is long enough (~12 s) to still be playing then.
LEAD_IN_SECS = 5.0
GREETING = (
    "Hello, and welcome! I am a voice assistant, running on this computer. I can answer "
    "questions about the world, work out sums, and look things up for you. Take your time, "
    "and ask me anything you would like to know."
)
TAIL_SECS = 2.0
QUESTIONS = {
    "france": "What is the capital of France?",
    "japan": "What is the capital of Japan?",
}
SERVER_START_TIMEOUT = 240  # loads Whisper, llama.cpp and Piper
CONNECT_TIMEOUT_MS = 60_000
TURN_TIMEOUT_MS = 240_000  # STT + LLM + TTS on two shared cores, maybe two sessions at once
# A dead session process: WebRTC notices only when its ICE checks go unanswered (seconds),
# then waits 5 s before offering again; a new process comes up with the conversation.
RESUME_TIMEOUT_MS = 90_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (`make test` installs it)"
)


def chromium_args(wav: Path | None = None, allow_mic: bool = True) -> list[str]:
    """Fake media devices; `wav` is what the microphone hears (a beep without one)."""
    args = ["--use-fake-device-for-media-stream"]
    if allow_mic:
        args.append("--use-fake-ui-for-media-stream")  # grants the mic without a prompt
    if wav:
        # `%noloop` (supported by Debian's Chromium 156) plays the file once instead of looping.
        args.append(f"--use-file-for-fake-audio-capture={wav}%noloop")
    return args + [
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-sync",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m bot serve` on a free loopback port, its output kept for failure reports."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: deque[str] = deque(maxlen=400)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            self.log.append(line.rstrip())

    def tail(self, lines: int = 60) -> str:
        return "\n".join(list(self.log)[-lines:])

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.url}/api/health", timeout=2) as response:
                return json.load(response)
        except OSError:
            return None

    def wait_until(self, condition, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                pytest.fail(f"the server exited ({code}) while waiting for {what}:\n{self.tail()}")
            health = self.health()
            if health is not None and condition(health):
                return health
            time.sleep(0.25)
        pytest.fail(f"timed out waiting for {what}; last health {self.health()}:\n{self.tail()}")

    def stop(self) -> None:
        stop_process(self.process, grace_secs=20)


@pytest.fixture(scope="session")
def client_bundle() -> Path:
    """The built client (a no-op when web/static/dist is up to date)."""
    result = subprocess.run(
        ["make", "-s", "client"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"`make client` failed:\n{result.stdout}\n{result.stderr}")
    bundle = ROOT / "web" / "static" / "dist" / "index.html"
    assert bundle.exists()
    return bundle


def started(server: Server):
    try:
        server.wait_until(
            lambda h: h.get("status") == "ok", SERVER_START_TIMEOUT, "the server to start"
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(client_bundle):
    yield from started(Server(env={"GREETING": GREETING}))


@pytest.fixture(scope="module")
def worker_server(client_bundle):
    """The server with SESSION_PROCESSES on: every session in its own worker process.

    No greeting: a worker's session can come up seconds after the page opened the mic, so
    when the question plays against the greeting is left to chance here; what this server
    is here for is the relay. (A question over the greeting: tests/test_turn_taking.py.)"""
    yield from started(Server(env={"SESSION_PROCESSES": "true", "GREETING": ""}))


@pytest.fixture(scope="session")
def local_voice():
    """The bot's own local models (its Piper voice), in this process."""
    from bot.config import Settings
    from bot.local.models import LocalModels

    return LocalModels(Settings())


@pytest.fixture(scope="session")
def speech_ms(local_voice):
    """How long the bot's voice takes to say a text."""
    return lambda text: 1000 * len(local_voice.synthesize(text, SAMPLE_RATE)) / SAMPLE_RATE


@pytest.fixture(scope="session")
def question_wavs(tmp_path_factory, local_voice) -> dict[str, Path]:
    """Each question spoken by the local TTS, as 16 kHz mono WAV with silence around it."""
    import numpy as np

    models = local_voice
    folder = tmp_path_factory.mktemp("questions")
    wavs = {}
    for name, text in QUESTIONS.items():
        speech = models.synthesize(text, SAMPLE_RATE)
        lead_in = np.zeros(int(LEAD_IN_SECS * SAMPLE_RATE), dtype=np.int16)
        tail = np.zeros(int(TAIL_SECS * SAMPLE_RATE), dtype=np.int16)
        audio = np.concatenate([lead_in, speech, tail])
        path = folder / f"{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(audio.astype(np.int16).tobytes())
        wavs[name] = path
    return wavs


# Module scope, not session: Playwright's sync API keeps an event loop running on this
# thread while it is open, and every async test after this module needs that thread free.
@pytest.fixture(scope="module")
def playwright():
    with playwright_api.sync_playwright() as p:
        yield p


class Caller:
    """One browser (its own fake microphone) with the page, talking over one transport."""

    def __init__(
        self, playwright, server, wav: Path | None, transport: str, allow_mic: bool = True
    ):
        self.server = server
        self.transport = transport
        self.browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(wav, allow_mic)
        )
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 800})
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )

    def agent(self) -> dict:
        return self.page.evaluate("() => JSON.parse(JSON.stringify(window.voiceAgent))")

    def wait(self, expression: str, what: str, timeout: int = TURN_TIMEOUT_MS) -> None:
        try:
            self.page.wait_for_function(expression, timeout=timeout, polling=250)
        except playwright_api.TimeoutError:
            pytest.fail(
                f"[{self.transport}] timed out waiting for {what}\n"
                f"voiceAgent: {json.dumps(self.agent(), indent=1)[:3000]}\n"
                f"page errors: {self.page_errors}\nconsole errors: {self.console_errors[-10:]}\n"
                f"server log:\n{self.server.tail()}"
            )

    def connect(self) -> None:
        self.page.goto(self.server.url)
        self.page.select_option("#transport", self.transport)
        self.page.click("#connect")

    def wait_connected(self) -> None:
        self.wait(
            "() => window.voiceAgent.connected", "the session to be ready", CONNECT_TIMEOUT_MS
        )

    def wait_for_answer(self, country: str) -> None:
        """The question heard, the answer played, and its turn's latency reported."""
        # All the user's words so far: a slow turn detector may split the question in two.
        self.wait(
            f"""() => {{
                 const said = window.voiceAgent.transcript
                   .filter(e => e.role === 'user' && e.final).map(e => e.text).join(' ');
                 return /capital/i.test(said) && /{country}/i.test(said);
               }}""",
            f"the user transcript of the {country} question",
        )
        self.wait(
            """() => window.voiceAgent.stats.playedAudioMs > 500 && window.voiceAgent.turns.some(
                 t => typeof t.stages_ms.voice_to_voice === 'number' && t.bot_text)""",
            "a turn with a voice-to-voice figure and bot audio played",
        )
        self.wait("() => window.voiceAgent.state === 'listening'", "the bot to finish speaking")

    def assert_asked_over_the_greeting(self, speech_ms) -> None:
        """The question cut the greeting off: of the bot audio the page got, what is not the
        answer is more than a second of the greeting and a second short of all of it; and
        the greeting's text never came (a segment's text is shown once it has been spoken
        whole), so the question is the transcript's first entry."""
        agent = self.agent()
        answers = " ".join(t["bot_text"] for t in agent["turns"])
        greeting_heard = agent["stats"]["receivedAudioMs"] - speech_ms(answers)
        assert 1000 < greeting_heard < speech_ms(GREETING) - 1000, (agent["stats"], answers)
        assert agent["transcript"][0]["role"] == "user", agent["transcript"]

    def disconnect(self) -> None:
        self.page.click("#disconnect")
        self.wait(
            "() => !window.voiceAgent.connected && window.voiceAgent.state === 'disconnected'",
            "the page to disconnect",
            CONNECT_TIMEOUT_MS,
        )

    def close(self) -> None:
        self.browser.close()


def texts(agent: dict, role: str) -> str:
    return " ".join(e["text"] for e in agent["transcript"] if e["role"] == role).lower()


def words(agent: dict, role: str) -> set[str]:
    return set(re.findall(r"[a-z]+", texts(agent, role)))


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_browser_conversation(
    server, playwright, question_wavs, speech_ms, transport, tmp_path
):
    caller = Caller(playwright, server, question_wavs["france"], transport)
    try:
        caller.connect()
        caller.wait_connected()
        caller.wait_for_answer("france")
        caller.assert_asked_over_the_greeting(speech_ms)

        agent = caller.agent()
        assert agent["transport"] == transport
        assert agent["sessionId"]
        assert agent["errors"] == []
        assert caller.page_errors == []
        assert all(t["session_id"] == agent["sessionId"] for t in agent["turns"])
        for turn in agent["turns"]:
            assert all(isinstance(v, (int, float)) and v >= 0 for v in turn["stages_ms"].values())
        assert "france" in " ".join(t["user_text"] for t in agent["turns"]).lower()
        assert agent["stats"]["receivedAudioMs"] >= agent["stats"]["playedAudioMs"] > 500
        # The page shows it: badge, transcript, and the latest figures under the chart.
        assert caller.page.inner_text("#state").strip().lower() == "listening"
        assert "france" in caller.page.inner_text("#transcript").lower()
        latest = agent["turns"][-1]
        assert caller.page.locator("#latency-latest").get_attribute("data-turn") == str(
            latest["turn"]
        )
        assert (caller.page.locator("#latency-latest .v2v dd").inner_text() == "—") == (
            "voice_to_voice" not in latest["stages_ms"]
        )
        assert caller.page.locator("#error").is_hidden()

        shot = tmp_path / f"browser-{transport}.png"
        caller.page.screenshot(path=str(shot))
        if transport == "websocket":
            keep_screenshot(shot, "screenshot.png")  # the README's (docs/screenshot.png)

        caller.disconnect()
        server.wait_until(lambda h: h["sessions"] == 0, 30, "the session to end on the server")
    finally:
        caller.close()


def admin_get(server: Server, path: str):
    """The admin API, which answers loopback clients without a token when none is set."""
    with urllib.request.urlopen(f"{server.url}/api/sessions{path}", timeout=5) as response:
        return json.load(response)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_browser_conversation_with_the_session_in_a_worker_process(
    worker_server, playwright, question_wavs, transport
):
    """The page is the same; the server relays the WebSocket (or hands the WebRTC offer on)
    to the session's own process. When that process dies, the page gets the conversation
    back in a new one: over WebSocket the server closes with 1011 and the page reconnects
    with its ticket; over WebRTC the connection just goes quiet, the SDK offers again by
    itself, and the ticket rides in that offer."""
    caller = Caller(playwright, worker_server, question_wavs["france"], transport)
    try:
        caller.connect()
        caller.wait_connected()
        [session] = admin_get(worker_server, "")
        assert session["transport"] == transport and session["pid"] != worker_server.process.pid
        caller.wait_for_answer("france")
        agent = caller.agent()
        assert agent["sessionId"] == session["id"]
        assert agent["errors"] == [] and caller.page_errors == []
        assert agent["stats"]["playedAudioMs"] > 500
        heard = agent["transcript"]

        os.kill(session["pid"], signal.SIGKILL)
        caller.wait(
            f"""() => window.voiceAgent.reconnects === 1 && window.voiceAgent.connected
                 && window.voiceAgent.sessionId !== '{session["id"]}'""",
            "the conversation to be resumed",
            RESUME_TIMEOUT_MS,
        )
        agent = caller.agent()
        assert agent["errors"] == [] and agent["transcript"][: len(heard)] == heard, agent
        [resumed] = admin_get(worker_server, "")
        assert resumed["id"] == agent["sessionId"] != session["id"]
        assert resumed["pid"] not in (session["pid"], worker_server.process.pid)
        # The question and its answer came along (the instructions are not counted).
        worker_server.wait_until(
            lambda h: admin_get(worker_server, f"/{resumed['id']}")["context"]["messages"] >= 2,
            30,
            "the resumed session's context",
        )
        assert "resumed" in caller.page.inner_text("#session-info")
        caller.disconnect()
        worker_server.wait_until(lambda h: h["sessions"] == 0, 30, "the session to end on the server")
    finally:
        caller.close()


@pytest.mark.slow
def test_two_sessions_do_not_cross(server, playwright, question_wavs, tmp_path):
    """Two browsers at once (each its own fake mic), one per transport, different questions."""
    france = Caller(playwright, server, question_wavs["france"], "websocket")
    japan = Caller(playwright, server, question_wavs["japan"], "webrtc")
    try:
        france.connect()
        japan.connect()
        france.wait_connected()
        japan.wait_connected()
        france.wait_for_answer("france")
        japan.wait_for_answer("japan")

        a, b = france.agent(), japan.agent()
        for caller, shot in ((france, "france"), (japan, "japan")):
            caller.page.screenshot(path=str(tmp_path / f"concurrent-{shot}.png"))
        assert a["sessionId"] and b["sessionId"] and a["sessionId"] != b["sessionId"]

        # Each page heard only its own question...
        assert "france" in texts(a, "user") and "japan" not in texts(a, "user")
        assert "japan" in texts(b, "user") and "france" not in texts(b, "user")
        # ...got only its own answers...
        assert not {"japan", "tokyo"} & words(a, "bot")
        assert not {"france", "paris"} & words(b, "bot")
        # ...and only its own session's turn reports.
        assert a["turns"] and all(t["session_id"] == a["sessionId"] for t in a["turns"])
        assert b["turns"] and all(t["session_id"] == b["sessionId"] for t in b["turns"])
        assert all("japan" not in t["user_text"].lower() for t in a["turns"])
        assert all("france" not in t["user_text"].lower() for t in b["turns"])
        assert a["errors"] == [] and b["errors"] == []

        france.disconnect()
        japan.disconnect()
        server.wait_until(lambda h: h["sessions"] == 0, 30, "both sessions to end on the server")
    finally:
        france.close()
        japan.close()


# ---- client behaviour against a server played by the test --------------------------------


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


@pytest.mark.parametrize("signal", ["interruption-frame", "bot-interrupted"])
def test_websocket_playback_stops_on_interruption(static_site, playwright, signal):
    """3 s of bot audio queued, an interruption after ~0.6 s: the rest is dropped unplayed,
    whether the server's in-band InterruptionFrame or RTVI bot-interrupted says so, and
    the next answer still plays."""
    caller = Caller(playwright, static_site, None, "websocket")
    try:
        healthy(caller.page)
        bot = FakeBotSocket(caller.page)
        caller.connect()
        caller.wait_connected()

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
    finally:
        caller.close()


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
    caller = Caller(playwright, static_site, None, "websocket")
    try:
        healthy(caller.page)
        bot = FakeBotSocket(caller.page)
        caller.connect()
        caller.wait_connected()
        data = {"type": "session", "session_id": "s", "transport": "websocket", "resume_token": "t"}
        bot.send(rtvi_bytes("server-message", data))
        caller.wait("() => window.voiceAgent.sessionId === 's'", "the session message")
        bot.ws.close(code=1000, reason="idle for 300 s")
        message = expect_error(caller, "server", "the server ended the session")
        assert len(bot.urls) == 1, bot.urls
        assert "idle for 300 s" in message
    finally:
        caller.close()


def test_a_dropped_websocket_resumes_its_conversation(static_site, playwright):
    """The connection drops (here: the session's process failed, 1011) while the server
    keeps the conversation: the page reconnects with the ticket of the server's `session`
    message and carries on with its transcript; a resume the server refuses ends the
    session with why."""
    from urllib.parse import parse_qs, urlparse

    caller = Caller(playwright, static_site, None, "websocket")

    def session_message(session_id: str, token: str) -> None:
        data = {"type": "session", "session_id": session_id, "transport": "websocket"}
        bot.send(rtvi_bytes("server-message", {**data, "resume_token": token}))
        caller.wait(f"() => window.voiceAgent.sessionId === '{session_id}'", "the session message")

    def asked_to_resume(url: str) -> dict:
        return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}

    try:
        healthy(caller.page)
        bot = FakeBotSocket(caller.page)
        caller.connect()
        caller.wait_connected()
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
    finally:
        caller.close()


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
    caller = Caller(playwright, static_site, None, "websocket")
    try:
        healthy(caller.page)
        bot = FakeBotSocket(caller.page)
        caller.connect()
        caller.wait_connected()

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
    finally:
        caller.close()
