"""Pipecat's own development runner starts our bot unchanged (`bot(runner_args)`)."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.processes import stop_process
from tests.text import contains_words
from web.ws_client import AgentClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


async def test_pipecat_runner_serves_our_bot_over_websocket(speech, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"STT_PROVIDER": "local", "LLM_PROVIDER": "local", "TTS_PROVIDER": "local", "GREETING": "",
           "PATH": "/usr/bin:/bin"}
    log = open(tmp_path / "runner.log", "w")
    runner = subprocess.Popen(
        [sys.executable, "-m", "bot.devrunner", "-t", "websocket", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert runner.poll() is None, (tmp_path / "runner.log").read_text()[-3000:]
            try:
                httpx.get(f"http://127.0.0.1:{port}/status", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        async with AgentClient(f"ws://127.0.0.1:{port}/ws-client") as client:
            await client.speak(speech("What is the capital of France?"))
            assert await client.silence_until(lambda r: r.turns, 120), (tmp_path / "runner.log").read_text()[-3000:]
            turn = client.received.turns[0]
            assert contains_words(turn["bot_text"], "Paris"), turn
            assert client.received.server_messages("session")[0]["transport"] == "websocket"
    finally:
        stop_process(runner, grace_secs=20)
