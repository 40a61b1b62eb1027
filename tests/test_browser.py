"""Real-browser tests: Chromium talks to a live `python -m bot serve` through the web client.

The microphone is Chromium's fake capture device playing a question synthesized by our own
TTS, so the whole path is real: getUserMedia → WebSocket or WebRTC → VAD, STT, LLM, TTS →
bot audio played in the page. The page's `window.voiceAgent` (web/client/src/main.ts) is
what the tests read; they wait on it, never sleep.

Chromium is Debian's (`make test` installs the `chromium` package); Playwright only drives
it (`playwright install` is never needed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
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

playwright_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "screenshot.png"
SAMPLE_RATE = 16000
# The fake device starts playing when the page opens the mic (on Connect): the lead-in
# lets the session come up and the greeting finish before the question.
LEAD_IN_SECS = 4.0
TAIL_SECS = 2.0
QUESTIONS = {
    "france": "What is the capital of France?",
    "japan": "What is the capital of Japan?",
}
SERVER_START_TIMEOUT = 240  # loads Whisper, llama.cpp and Piper
CONNECT_TIMEOUT_MS = 60_000
TURN_TIMEOUT_MS = 240_000  # STT + LLM + TTS on two shared cores, maybe two sessions at once

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (`make test` installs it)"),
]


def chromium_args(wav: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        # `%noloop` (supported by Debian's Chromium 156) plays the file once instead of looping.
        f"--use-file-for-fake-audio-capture={wav}%noloop",
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

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: deque[str] = deque(maxlen=400)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
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
                pytest.fail(f"the server exited ({self.process.returncode}) while waiting for {what}:\n{self.tail()}")
            health = self.health()
            if health is not None and condition(health):
                return health
            time.sleep(0.25)
        pytest.fail(f"timed out waiting for {what}; last health {self.health()}:\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def client_bundle() -> Path:
    """The built client (a no-op when web/static/dist is up to date)."""
    result = subprocess.run(["make", "-s", "client"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"`make client` failed:\n{result.stdout}\n{result.stderr}")
    bundle = ROOT / "web" / "static" / "dist" / "index.html"
    assert bundle.exists()
    return bundle


@pytest.fixture(scope="session")
def server(client_bundle):
    server = Server()
    try:
        server.wait_until(lambda h: h.get("status") == "ok", SERVER_START_TIMEOUT, "the server to start")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def question_wavs(tmp_path_factory) -> dict[str, Path]:
    """Each question spoken by the local TTS, as 16 kHz mono WAV with silence around it."""
    import numpy as np

    from bot.config import Settings
    from bot.local_models import LocalModels

    models = LocalModels(Settings())
    folder = tmp_path_factory.mktemp("questions")
    wavs = {}
    for name, text in QUESTIONS.items():
        speech = models.synthesize(text, SAMPLE_RATE)
        silence = lambda secs: np.zeros(int(secs * SAMPLE_RATE), dtype=np.int16)  # noqa: E731
        audio = np.concatenate([silence(LEAD_IN_SECS), speech, silence(TAIL_SECS)])
        path = folder / f"{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(audio.astype(np.int16).tobytes())
        wavs[name] = path
    return wavs


@pytest.fixture(scope="session")
def playwright():
    with playwright_api.sync_playwright() as p:
        yield p


class Caller:
    """One browser (its own fake microphone) with the page, talking over one transport."""

    def __init__(self, playwright, server: Server, wav: Path, transport: str):
        self.server = server
        self.transport = transport
        self.browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(wav)
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
        self.wait("() => window.voiceAgent.connected", "the session to be ready", CONNECT_TIMEOUT_MS)

    def wait_for_answer(self, country: str) -> None:
        """The question heard, the answer played, and its turn's latency reported."""
        self.wait(
            f"""() => window.voiceAgent.transcript.some(e => e.role === 'user' && e.final
                 && /capital/i.test(e.text) && /{country}/i.test(e.text))""",
            f"the user transcript of the {country} question",
        )
        self.wait(
            """() => window.voiceAgent.turns.some(t => typeof t.stages_ms.voice_to_voice === 'number'
                 && t.bot_text) && window.voiceAgent.stats.playedAudioMs > 500""",
            "a turn with a voice-to-voice figure and bot audio played",
        )
        self.wait("() => window.voiceAgent.state === 'listening'", "the bot to finish speaking")

    def disconnect(self) -> None:
        self.page.click("#disconnect")
        self.wait("() => !window.voiceAgent.connected && window.voiceAgent.state === 'disconnected'",
                  "the page to disconnect", CONNECT_TIMEOUT_MS)

    def close(self) -> None:
        self.browser.close()


def texts(agent: dict, role: str) -> str:
    return " ".join(e["text"] for e in agent["transcript"] if e["role"] == role).lower()


def words(agent: dict, role: str) -> set[str]:
    return set(re.findall(r"[a-z]+", texts(agent, role)))


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_browser_conversation(server, playwright, question_wavs, transport, tmp_path):
    caller = Caller(playwright, server, question_wavs["france"], transport)
    try:
        caller.connect()
        caller.wait_connected()
        caller.wait_for_answer("france")

        agent = caller.agent()
        assert agent["transport"] == transport
        assert agent["sessionId"]
        assert agent["errors"] == []
        assert caller.page_errors == []
        turn = next(t for t in agent["turns"] if "voice_to_voice" in t["stages_ms"])
        assert turn["session_id"] == agent["sessionId"]
        assert all(isinstance(v, (int, float)) and v >= 0 for v in turn["stages_ms"].values())
        assert "france" in turn["user_text"].lower()
        assert agent["stats"]["receivedAudioMs"] >= agent["stats"]["playedAudioMs"] > 500
        # The page shows it: badge, transcript, and the latest figures under the chart.
        assert caller.page.inner_text("#state").strip().lower() == "listening"
        assert "france" in caller.page.inner_text("#transcript").lower()
        assert caller.page.locator("#latency-latest .v2v dd").inner_text() != "—"
        assert caller.page.locator("#error").is_hidden()

        shot = tmp_path / f"browser-{transport}.png"
        caller.page.screenshot(path=str(shot))
        # docs/screenshot.png (the README's) is refreshed on demand, not on every run.
        if transport == "websocket" and (not SCREENSHOT.exists() or os.environ.get("UPDATE_SCREENSHOT")):
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)

        caller.disconnect()
        server.wait_until(lambda h: h["sessions"] == 0, 30, "the session to end on the server")
    finally:
        caller.close()


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
