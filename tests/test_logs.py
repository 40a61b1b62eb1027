"""Structured logs tagged per session with secrets redacted, the turn's log line, and provider
errors counted once by stage and provider."""

from __future__ import annotations

import asyncio
import io
import json
import sys

import pytest
from loguru import logger

from bot.config import Settings
from bot.logs import configure_logging, log_turn, session_context
from processors.observers.turn_record import TurnRecord
from tests.support.observability import PLANTED, metric_samples, synthetic_turn
from tests.support.polling import until
from tests.support.settings import local_settings

# --- Logs ---------------------------------------------------------------------------------


def test_bot_text_joins_llm_deltas_as_written_and_spoken_words_with_spaces():
    answered = TurnRecord(
        "s", 1, bot_text_generated=["Rom", "eo", " and", " Juliet", " cost", " 1", "0", "0", "."])
    assert answered.spoken_text() == "Romeo and Juliet cost 100."
    cut = TurnRecord("s", 2, interrupted=True, bot_text_generated=["Rom", "eo", " and"],
                     bot_text_spoken=["Romeo", "and", "Juliet", "."])
    assert cut.spoken_text() == "Romeo and Juliet."


def test_json_and_console_lines_tag_sessions_and_redact_secrets(
        planted_keys, tmp_path, restore_logging):
    settings = local_settings(log_format="json", log_file=tmp_path / "agent.log")
    secrets = settings.secrets()
    for name, value in PLANTED.items():
        if name.lower() in Settings.model_fields:
            assert value in secrets, f"{name} is a secret for the logs"
    stdout = io.StringIO()
    configure_logging(settings, stream=stdout)
    turn = {"n": None}
    with session_context("sess-a", turn=lambda: turn["n"]):
        logger.info("before the first turn")
        turn["n"] = 3
        for secret in secrets:
            logger.info(f"the key is {secret}")
            logger.bind(headers={"Authorization": f"Bearer {secret}"}, url=f"wss://x/?key={secret}").info("extra")
            try:
                raise ConnectionError(f"refused with {secret}")
            except ConnectionError:
                logger.exception("provider failed")
    logger.info("outside any session")

    for text in (stdout.getvalue(), (tmp_path / "agent.log").read_text()):
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == 2 + 3 * len(secrets)
        for value in PLANTED.values():
            assert value not in text
        assert text.count("[REDACTED]") >= 4 * len(secrets)
        extras = [line["record"]["extra"] for line in lines]
        assert extras[0] == {"session_id": "sess-a"}, "no turn before the first one"
        assert all(e["session_id"] == "sess-a" and e["turn"] == 3 for e in extras[1:-1])
        assert "session_id" not in extras[-1]
        assert extras[2]["headers"] == {"Authorization": "Bearer [REDACTED]"}

    # Console format: human-readable, tagged, redacted.
    console = io.StringIO()
    configure_logging(local_settings(log_format="console"), stream=console)
    with session_context("sess-b", turn=lambda: 2):
        logger.info(f"console line {PLANTED['GROQ_API_KEY']}")
    line = console.getvalue().strip()
    assert "sess-b t2" in line and "console line [REDACTED]" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_turn_log_line_carries_every_timing(tmp_path, restore_logging):
    stream = io.StringIO()
    configure_logging(local_settings(log_format="json"), stream=stream)
    record = synthetic_turn("s1", 4, interrupted=True)
    log_turn(record)
    line = json.loads(stream.getvalue())["record"]
    extra = line["extra"]
    assert extra["event"] == "turn" and extra["session_id"] == "s1" and extra["turn"] == 4
    assert extra["stages_ms"] == record.to_dict()["stages_ms"]
    assert set(extra["stages_ms"]) == {"vad", "stt", "turn", "llm_ttft", "tts_ttfb",
                                       "voice_to_voice", "barge_in_stop"}
    assert extra["moments_ms"]["speech_start"] == 0 and extra["moments_ms"]["bot_audio_out"] > 0
    assert (extra["user_text"] == "question 4" and extra["bot_text"] == "answer 4"
            and extra["interrupted"])
    for stage, ms in extra["stages_ms"].items():
        assert f"{stage}={ms:.0f}ms" in line["message"]


# --- Provider errors ----------------------------------------------------------------------


async def test_provider_errors_are_counted_once_by_stage_and_provider():
    from pipecat.frames.frames import TTSSpeakFrame
    from pipecat.tests.utils import run_test

    from bot.providers import ProviderNames
    from processors.observers.provider_errors import ProviderErrorObserver
    from tests.support.fakes import InstantTTSService
    from web.observability import Metrics

    class FailingTTS(InstantTTSService):
        async def run_tts(self, text: str, context_id: str):
            await self.push_error("synthesis failed",
                                  exception=ConnectionError("voice server unreachable"))
            async for frame in super().run_tts(text, context_id):
                yield frame

    metrics = Metrics()
    observer = ProviderErrorObserver(metrics.errors,
                                     ProviderNames(stt="whisper", llm="llama.cpp", tts="piper"))
    await run_test(FailingTTS(), frames_to_send=[TTSSpeakFrame("hello")], observers=[observer])
    samples = metric_samples(metrics.exposition().decode())
    errors = {k: v for k, v in samples.items() if k[0] == "voice_agent_errors_total"}
    assert list(errors.values()) == [1.0], errors
    (_, labels), = errors
    assert dict(labels)["stage"] == "tts" and dict(labels)["provider"] == "piper"


# A session process as far as counting goes: its errors and fallbacks, then `ready`; then it ends.
COUNTING_PROCESS = """
import json
from processors.observers.provider_errors import provider_counters
errors, fallbacks = provider_counters(None)
errors.labels(stage="tts", provider="cartesia", category="fatal").inc(2)
errors.labels(stage="stt", provider="deepgram", category="fatal").inc()
fallbacks.labels(stage="tts", reason="error").inc()
print(json.dumps({"event": "ready"}), flush=True)
"""


async def test_a_session_process_counts_in_the_servers_metrics_directory():
    """What a session process counts (prometheus-client multiprocess files, in the directory
    the spawner gives it) is added to the server's own counts, one family per counter, and
    stays counted once the process has gone (its files are not left behind: the directory
    would grow by a process's files per session); the directory goes with the server."""
    from pathlib import Path

    from web.observability import Metrics
    from web.process_metrics import SessionProcessMetrics
    from web.sessions import SessionRegistry
    from web.spawner import BotSpawner

    directory = SessionProcessMetrics()
    metrics = Metrics(session_processes=directory)
    metrics.errors.labels(stage="tts", provider="cartesia", category="fatal").inc()  # in process
    registry = SessionRegistry(max_sessions=1)
    spawner = BotSpawner(local_settings(), registry, 60, directory,
                         command=[sys.executable, "-c", COUNTING_PROCESS])
    link = await spawner.spawn(registry.reserve(), "websocket")
    await asyncio.wait_for(registry.get(link.session_id).task, 30)
    assert link.process.returncode == 0, link.error_summary()

    text = metrics.exposition().decode()
    samples = metric_samples(text)
    tts_errors = ("voice_agent_errors_total",
                  (("category", "fatal"), ("provider", "cartesia"), ("stage", "tts")))
    stt_errors = ("voice_agent_errors_total",
                  (("category", "fatal"), ("provider", "deepgram"), ("stage", "stt")))
    assert samples[tts_errors] == 3.0 and samples[stt_errors] == 1.0, samples
    assert samples[("voice_agent_fallbacks_total", (("reason", "error"), ("stage", "tts")))] == 1.0
    assert text.count("# TYPE voice_agent_errors_total counter") == 1, text
    await until(lambda: not list(Path(directory.path).glob("*.db")), 10, "the files to go")
    # A second session process's counts add to the first's.
    link = await spawner.spawn(registry.reserve(), "websocket")
    await asyncio.wait_for(registry.get(link.session_id).task, 30)
    await until(lambda: not list(Path(directory.path).glob("*.db")), 10, "the files to go")
    samples = metric_samples(metrics.exposition().decode())
    assert samples[tts_errors] == 5.0 and samples[stt_errors] == 2.0, samples
    directory.close()
    assert not Path(directory.path).exists()


