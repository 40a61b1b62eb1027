"""Real-browser conversations: Debian's Chromium talks to a live `python -m bot serve`.

The microphone is Chromium's fake capture device playing a question synthesized by our own
TTS, so the whole path is real: getUserMedia → WebSocket or WebRTC → VAD, STT, LLM, TTS →
bot audio played in the page. (The client's behaviour against a server played by the test:
tests/test_browser_client.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
import wave
from collections import deque
from pathlib import Path

import pytest

from bot.processes import stop_process
from tests.support.browser import (
    Caller,
    needs_chromium,
)
from tests.support.polling import until_sync
from tests.support.screenshots import keep_screenshot
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[1]
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
# A dead session process: WebRTC notices only when its ICE checks go unanswered (seconds),
# then waits 5 s before offering again; a new process comes up with the conversation.
RESUME_TIMEOUT_MS = 90_000

pytestmark = needs_chromium


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
        """The first /api/health answer `condition` accepts; fails if the server exits."""

        def accepted() -> dict | None:
            if self.process.poll() is not None:
                code = self.process.returncode
                pytest.fail(f"the server exited ({code}) while waiting for {what}:\n{self.tail()}")
            health = self.health()
            return health if health is not None and condition(health) else None

        return until_sync(accepted, timeout, what, interval=0.25,
                          details=lambda: f"last health {self.health()}\n{self.tail()}")

    def stop(self) -> None:
        stop_process(self.process, grace_secs=20)


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
def process_server(client_bundle):
    """The server with SESSION_PROCESSES on: every session in its own session process.

    No greeting: what this server is here for is the relay. (A question over the greeting:
    tests/test_turn_taking.py.)"""
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



def assert_asked_over_the_greeting(caller: Caller, speech_ms) -> None:
    """The question cut the greeting off: of the bot audio the page got, what is not the
    answer is more than a second of the greeting and a second short of all of it; and
    the greeting's text never came (a segment's text is shown once it has been spoken
    whole), so the question is the transcript's first entry."""
    agent = caller.agent()
    answers = " ".join(t["bot_text"] for t in agent["turns"])
    greeting_heard = agent["stats"]["receivedAudioMs"] - speech_ms(answers)
    assert 1000 < greeting_heard < speech_ms(GREETING) - 1000, (agent["stats"], answers)
    assert agent["transcript"][0]["role"] == "user", agent["transcript"]


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
        assert_asked_over_the_greeting(caller, speech_ms)

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
def test_browser_conversation_with_the_session_in_its_own_process(
    process_server, playwright, question_wavs, transport
):
    """The page is the same; the server relays the WebSocket (or hands the WebRTC offer on)
    to the session's own process. When that process dies, the page gets the conversation
    back in a new one: over WebSocket the server closes with 1011 and the page reconnects
    with its ticket; over WebRTC the connection just goes quiet, the SDK offers again by
    itself, and the ticket rides in that offer."""
    # The fake microphone plays its question once, from the click on: over WebRTC what it
    # says before the session process is up is never sent, so click once one is loaded.
    process_server.wait_until(
        lambda h: h["ready_session_processes"] >= 1, SERVER_START_TIMEOUT, "a loaded spare"
    )
    caller = Caller(playwright, process_server, question_wavs["france"], transport)
    try:
        caller.connect()
        caller.wait_connected()
        [session] = admin_get(process_server, "")
        assert session["transport"] == transport
        assert session["pid"] != process_server.process.pid
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
        [resumed] = admin_get(process_server, "")
        assert resumed["id"] == agent["sessionId"] != session["id"]
        assert resumed["pid"] not in (session["pid"], process_server.process.pid)
        # The question and its answer came along (the instructions are not counted).
        detail = f"/{resumed['id']}"
        process_server.wait_until(
            lambda h: admin_get(process_server, detail)["context"]["messages"] >= 2,
            30,
            "the resumed session's context",
        )
        assert "resumed" in caller.page.inner_text("#session-info")
        caller.disconnect()
        process_server.wait_until(lambda h: h["sessions"] == 0, 30,
                                  "the session to end on the server")
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


