"""Pipecat's own development runner starts our bot unchanged (`bot(runner_args)`)."""

import subprocess
import sys
from pathlib import Path

import pytest

from bot.processes import free_port, stop_process
from tests.support.server import wait_until_answering
from tests.text import contains_words
from web.ws_client import AgentClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


async def test_pipecat_runner_serves_our_bot_over_websocket(speech, tmp_path):
    port = free_port()
    env = {"STT_PROVIDER": "local", "LLM_PROVIDER": "local", "TTS_PROVIDER": "local",
           "GREETING": "", "PATH": "/usr/bin:/bin"}
    log = open(tmp_path / "runner.log", "w")

    def tail() -> str:
        return (tmp_path / "runner.log").read_text()[-3000:]

    runner = subprocess.Popen(
        [sys.executable, "-m", "bot.devrunner", "-t", "websocket", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(runner, f"http://127.0.0.1:{port}/status", 120, "the dev runner", tail)
        async with AgentClient(f"ws://127.0.0.1:{port}/ws-client") as client:
            await client.speak(speech("What is the capital of France?"))
            assert await client.silence_until(lambda r: r.turns, 120), tail()
            turn = client.received.turns[0]
            assert contains_words(turn["bot_text"], "Paris"), turn
            assert client.received.server_messages("session")[0]["transport"] == "websocket"
    finally:
        stop_process(runner, grace_secs=20)
