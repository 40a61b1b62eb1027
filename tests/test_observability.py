"""Observability: per-turn records everywhere (client, log, /metrics, dashboard ring, recording),
structured logs tagged per session with secrets redacted, bounded rings and recordings."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
import wave
from collections import Counter as Tally

import httpx
import numpy as np
import pytest
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from bot.logs import configure_logging, log_turn, session_context
from processors.observers.turn_metrics import TurnRecord
from processors.recording import RecordingFolder, SessionRecorder
from tests.support.fakes import FakeProviders
from tests.support.polling import until
from tests.support.settings import KEY_VARIABLES, local_settings
from web.ws_client import AgentClient

FAKE = FakeProviders()
PLANTED = {name: f"planted-{name.lower().replace('_', '-')}-7c1e9b" for name in (*KEY_VARIABLES, "ADMIN_TOKEN")}
MAX_BYTES = 400_000
PROCESSOR_NAME = re.compile(r"\b([A-Z][A-Za-z0-9]+#\d+)\b")


@pytest.fixture
def restore_logging():
    yield
    logger.remove()
    logger.configure(patcher=lambda record: None, extra={})
    logger.add(sys.stderr)


@pytest.fixture
def planted_keys(monkeypatch):
    """Recognisable fake keys in the environment; every provider stays local."""
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    return PLANTED


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def turns_reached(n):
    return lambda r: len(r.turns) >= n


async def ask(client: AgentClient, audio, n_before: int, timeout: float = 240) -> dict:
    await client.speak(audio)
    assert await client.silence_until(turns_reached(n_before + 1), timeout), client.received.turns
    return client.received.turns[n_before]


def synthetic_turn(session_id: str, n: int, interrupted: bool = False) -> TurnRecord:
    t0 = n * 10.0
    record = TurnRecord(
        session_id=session_id, turn=n, user_text=f"question {n}", interrupted=interrupted,
        speech_start_at=t0, speech_end_at=t0 + 1.0, vad_stop_at=t0 + 1.2, stt_final_at=t0 + 1.25 + n % 7 / 100,
        llm_request_at=t0 + 1.35, llm_first_output_at=t0 + 1.6, llm_first_text_at=t0 + 1.6,
        tts_first_audio_at=t0 + 1.75, bot_audio_out_at=t0 + 1.8 + n % 5 / 10,
    )
    record.bot_text_spoken = [f"answer {n}"]
    if interrupted:
        record.barge_in_at, record.bot_stopped_at = t0 + 2.5, t0 + 2.62
    return record


class ObservedTurns:
    """A TurnMetricsObserver fed pushes by hand: `push(frame, t)` from a plain processor,
    the output transport (`source=turns.output`) or to the LLM (`destination=turns.llm`)."""

    def __init__(self):
        from pipecat.processors.frame_processor import FrameProcessor
        from pipecat.services.llm_service import LLMService
        from pipecat.transports.base_output import BaseOutputTransport
        from pipecat.transports.base_transport import TransportParams

        from processors.observers.turn_metrics import TurnMetricsObserver

        self.observer, self.records = TurnMetricsObserver("s1"), []
        self.observer.subscribe(self.records.append)
        self.output, self.other, self.llm = BaseOutputTransport(TransportParams()), FrameProcessor(), LLMService()

    async def push(self, frame, t, source=None, destination=None, upstream=False):
        from pipecat.observers.base_observer import FramePushed
        from pipecat.processors.frame_processor import FrameDirection

        direction = FrameDirection.UPSTREAM if upstream else FrameDirection.DOWNSTREAM
        await self.observer.on_push_frame(
            FramePushed(source or self.other, destination or self.other, frame, direction, int(t * 1e9))
        )

    @staticmethod
    def audio():
        from pipecat.frames.frames import OutputAudioRawFrame

        return OutputAudioRawFrame(b"\0\0" * 480, 24000, 1)


async def test_barge_in_stop_ends_at_the_last_bot_audio_out_not_at_bot_stopped_speaking():
    """BotStoppedSpeaking follows the last audio by a silence timeout; the caller heard
    the bot stop when its last audio frame went out."""
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        LLMContextFrame,
        UserStartedSpeakingFrame,
        VADUserStartedSpeakingFrame,
    )
    from pipecat.processors.aggregators.llm_context import LLMContext

    turns = ObservedTurns()
    push, audio, output, llm, records = turns.push, turns.audio, turns.output, turns.llm, turns.records

    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    await push(LLMContextFrame(LLMContext()), 1.0, destination=llm)
    await push(BotStartedSpeakingFrame(), 1.5, source=output)
    for i in range(20):  # the answer plays from 1.5 s
        await push(audio(), 1.5 + i * 0.02, source=output)
    await push(VADUserStartedSpeakingFrame(start_secs=0.2), 2.0, upstream=True)  # speech began at 1.8
    await push(UserStartedSpeakingFrame(), 2.0, upstream=True)
    await push(audio(), 2.05, source=output)  # the last audio out, before the interruption lands
    await push(BotStoppedSpeakingFrame(), 2.45, source=output)
    assert len(records) == 1 and records[0].interrupted
    assert records[0].stages_ms()["barge_in_stop"] == pytest.approx(250.0)


async def test_a_turn_started_on_its_words_keeps_the_speech_end_it_came_after():
    """Over the bot, a turn starts once its words are judged (bot/barge_in.py): after the VAD
    stopped and the STT finalised. Its voice-to-voice still runs from the end of the speech."""
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        LLMContextFrame,
        TranscriptionFrame,
        UserStartedSpeakingFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.services.stt_service import STTService

    turns = ObservedTurns()
    push, audio, output, llm, records = turns.push, turns.audio, turns.output, turns.llm, turns.records
    class AnySTT(STTService):
        async def run_stt(self, audio):
            yield None

    stt = AnySTT()

    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    await push(LLMContextFrame(LLMContext()), 1.0, destination=llm)
    await push(BotStartedSpeakingFrame(), 1.5, source=output)
    await push(audio(), 1.5, source=output)
    await push(BotStoppedSpeakingFrame(), 2.0, source=output)
    await push(VADUserStartedSpeakingFrame(start_secs=0.2), 2.2, upstream=True)
    await push(VADUserStoppedSpeakingFrame(stop_secs=0.2), 3.2, upstream=True)  # spoke until 3.0
    await push(TranscriptionFrame("hello there", "u", "now"), 3.4, source=stt)
    await push(UserStartedSpeakingFrame(), 3.45, upstream=True)  # started on its words
    await push(LLMContextFrame(LLMContext()), 3.5, destination=llm)
    await push(BotStartedSpeakingFrame(), 3.9, source=output)
    await push(audio(), 3.9, source=output)
    await turns.observer.flush()
    stages = records[-1].stages_ms()
    assert stages["voice_to_voice"] == pytest.approx(900.0)
    assert stages["vad"] == pytest.approx(200.0) and stages["stt"] == pytest.approx(200.0)


async def test_a_turn_answered_without_the_llm_is_reported_when_the_bot_stops():
    """An untranscribed barge-in answered by EmptyTurnReply's fixed sentence (spoken by the
    TTS, no LLM request) is reported when the sentence ends, not at the next turn."""
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        TTSTextFrame,
        UserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
    )
    from pipecat.utils.text.base_text_aggregator import AggregationType

    from bot.turn_taking import EMPTY_TURN_REPLY

    turns = ObservedTurns()
    push, output = turns.push, turns.output

    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    # A greeting playing across the end of the user's turn is not the reply to it.
    await push(BotStartedSpeakingFrame(), 0.3, source=output)
    await push(TTSTextFrame("Hi!", AggregationType.WORD), 0.3, source=output)
    await push(UserStoppedSpeakingFrame(), 1.0, upstream=True)
    await push(BotStoppedSpeakingFrame(), 1.1, source=output)
    assert turns.records == []
    await push(BotStartedSpeakingFrame(), 1.2, source=output)
    for i, word in enumerate(EMPTY_TURN_REPLY.split()):
        await push(TTSTextFrame(word, AggregationType.WORD), 1.2 + i * 0.1, source=output)
        await push(turns.audio(), 1.2 + i * 0.1, source=output)
    await push(BotStoppedSpeakingFrame(), 2.5, source=output)
    [record] = turns.records
    assert record.to_dict()["bot_text"].endswith(EMPTY_TURN_REPLY) and not record.to_dict()["user_text"]
    assert "voice_to_voice" not in record.stages_ms()


# --- Logs ---------------------------------------------------------------------------------


def test_bot_text_joins_llm_deltas_as_written_and_spoken_words_with_spaces():
    answered = TurnRecord("s", 1, bot_text_generated=["Rom", "eo", " and", " Juliet", " cost", " 1", "0", "0", "."])
    assert answered.spoken_text() == "Romeo and Juliet cost 100."
    cut = TurnRecord("s", 2, interrupted=True, bot_text_generated=["Rom", "eo", " and"],
                     bot_text_spoken=["Romeo", "and", "Juliet", "."])
    assert cut.spoken_text() == "Romeo and Juliet."


def test_json_and_console_lines_tag_sessions_and_redact_secrets(planted_keys, tmp_path, restore_logging):
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
    assert set(extra["stages_ms"]) == {"vad", "stt", "turn", "llm_ttft", "tts_ttfb", "voice_to_voice", "barge_in_stop"}
    assert extra["moments_ms"]["speech_start"] == 0 and extra["moments_ms"]["bot_audio_out"] > 0
    assert extra["user_text"] == "question 4" and extra["bot_text"] == "answer 4" and extra["interrupted"]
    for stage, ms in extra["stages_ms"].items():
        assert f"{stage}={ms:.0f}ms" in line["message"]


# --- Provider errors ----------------------------------------------------------------------


async def test_provider_errors_are_counted_once_by_stage_and_provider():
    from pipecat.frames.frames import TTSSpeakFrame
    from pipecat.tests.utils import run_test

    from tests.support.fakes import InstantTTSService
    from bot.providers import ProviderNames
    from processors.observers.provider_errors import ProviderErrorObserver
    from web.observability import Metrics

    class FailingTTS(InstantTTSService):
        async def run_tts(self, text: str, context_id: str):
            await self.push_error("synthesis failed", exception=ConnectionError("voice server unreachable"))
            async for frame in super().run_tts(text, context_id):
                yield frame

    metrics = Metrics()
    observer = ProviderErrorObserver(metrics.errors, ProviderNames(stt="whisper", llm="llama.cpp", tts="piper"))
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


# --- Dashboard ring, events, /metrics and recording under 1,000 turns ----------------------


async def test_rings_recordings_and_metrics_stay_bounded_over_1000_turns(serve_app, tmp_path, monkeypatch):
    import web.observability as observability
    from bot.pipeline import Session

    monkeypatch.setattr(observability, "STREAM_SECS", 600.0)
    limits = dict(dashboard_session_turns=20, dashboard_chart_turns=50, recording_max_sessions=3,
                  recording_max_bytes=MAX_BYTES, recording_enabled=True, recording_audio=True,
                  recording_dir=tmp_path / "rec")
    async with serve_app(FAKE, max_sessions=4, **limits) as server:
        settings: Settings = server.app.state.settings
        obs = server.app.state.observability
        folder = RecordingFolder.from_settings(settings)
        received: list[tuple[str, dict]] = []
        changed = asyncio.Event()

        async def read_events():
            async with httpx.AsyncClient(timeout=None) as http:
                async with http.stream("GET", f"{server.url}/api/events") as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    event = None
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: "):
                            received.append((event, json.loads(line[6:])))
                            changed.set()

        async def wait_events(predicate, what):
            while not predicate():
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), 30)
                except TimeoutError:
                    pytest.fail(f"timed out waiting for {what}: {len(received)} events")

        reader = asyncio.create_task(read_events())
        await wait_events(lambda: received, "the snapshot")
        assert received[0][0] == "snapshot" and received[0][1]["sessions"] == []

        audio = np.zeros(500, dtype=np.int16).tobytes()  # 250 stereo frames per turn
        interrupted_turns = 0

        async def synthetic_session(turns: int):
            nonlocal interrupted_turns
            session = Session(settings=settings, models=server.app.state.models, transport_kind="synthetic")
            recorder = SessionRecorder.from_settings(settings, session.id)

            async def bot():
                nonlocal interrupted_turns
                for n in range(1, turns + 1):
                    record = synthetic_turn(session.id, n, interrupted=n % 9 == 0)
                    interrupted_turns += record.interrupted
                    for subscriber in session.on_turn:
                        subscriber(record)
                    recorder.write_turn(record)
                    recorder.write_audio(audio, 16000, 2)
                    live = server.registry.get(session.id)
                    assert len(live.history) <= 20 and live.history[-1]["turn"] == n
                    assert len(obs.recent_turns) <= 50
                    recordings = folder.recordings()
                    assert len(recordings) <= 3 and sum(r.bytes for r in recordings) <= MAX_BYTES
                    await asyncio.sleep(0)
                recorder.close()

            slot = server.registry.reserve()
            await server.registry.run(slot, session, "synthetic", bot())
            return session.id

        ids = []
        for _ in range(5):  # 5 rounds of 2 concurrent sessions × 100 turns
            ids += await asyncio.gather(synthetic_session(100), synthetic_session(100))

        await wait_events(lambda: Tally(e for e, _ in received)["session-ended"] >= 10, "10 sessions ended")
        kinds = Tally(e for e, _ in received)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

        turn_events = [d["turn"] for e, d in received if e == "turn"]
        assert len(turn_events) == 1000 and Tally(t["session_id"] for t in turn_events) == {i: 100 for i in ids}
        assert kinds["session-started"] == 10 == kinds["session-ended"] and kinds["snapshot"] == 1
        # The last round's two recordings are left, whole: a third would fit RECORDING_MAX_SESSIONS
        # but not RECORDING_MAX_BYTES, so the oldest went.
        left = folder.recordings()
        assert sorted(r.stem.split("-", 1)[1] for r in left) == sorted(ids[-2:])
        for r in left:
            for path in r.files:
                if path.suffix == ".wav":
                    with wave.open(str(path)) as w:
                        assert w.getnchannels() == 2 and w.getframerate() == 16000 and w.getnframes() > 0
                else:
                    lines = [json.loads(x) for x in path.read_text().splitlines()]
                    assert [x["turn"] for x in lines] == list(range(1, 101))

        async with httpx.AsyncClient() as http:
            samples = metric_samples((await http.get(f"{server.url}/metrics")).text)
            snapshot = (await http.get(f"{server.url}/api/dashboard")).json()
        assert samples[("voice_agent_turns_total", ())] == 1000
        assert samples[("voice_agent_interruptions_total", ())] == interrupted_turns > 0
        assert samples[("voice_agent_barge_in_stop_seconds_count", ())] == interrupted_turns
        assert samples[("voice_agent_voice_to_voice_seconds_count", ())] == 1000
        assert samples[("voice_agent_stage_seconds_count", (("stage", "stt"),))] == 1000
        assert samples[("voice_agent_sessions_total", (("transport", "synthetic"),))] == 10
        assert samples[("voice_agent_live_sessions", ())] == 0
        assert len(snapshot["recent_turns"]) == 50 and snapshot["sessions"] == []
        assert len(obs.events) == 0, "the closed event stream unsubscribed"


async def test_a_real_session_with_fake_providers_records_and_feeds_the_ring(serve_app, speech, tmp_path):
    rec = tmp_path / "rec"
    async with serve_app(FAKE, dashboard_session_turns=2, recording_enabled=True,
                         recording_audio=True, recording_dir=rec,
                         recording_max_sessions=2) as server:
        question = speech("What is the capital of France?")
        async with AgentClient(server.ws_url) as client:
            for n in range(3):
                turn = await ask(client, question, n, timeout=30)
                assert "hello there" in turn["user_text"] and turn["stages_ms"].get("voice_to_voice", 0) > 0, (n, turn)
            session_id = client.received.server_messages("session")[0]["session_id"]
            live = server.registry.get(session_id)
            assert [t["turn"] for t in live.history] == [2, 3], "the ring keeps the newest turns"
            assert [t["stages_ms"] for t in live.history] == [t["stages_ms"] for t in client.received.turns[1:]]
        await until(lambda: not server.registry.all(), 20, "the session to end")

        (recording,) = RecordingFolder(rec, 2, 10**9).recordings()
        jsonl = next(p for p in recording.files if p.suffix == ".jsonl")
        wav = next(p for p in recording.files if p.suffix == ".wav")
        lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert [x["turn"] for x in lines] == [1, 2, 3]
        assert [x["stages_ms"] for x in lines] == [t["stages_ms"] for t in client.received.turns]
        with wave.open(str(wav)) as w:
            assert (w.getnchannels(), w.getframerate()) == (2, 16000)
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
        user, bot = np.abs(samples[:, 0].astype(np.int32)), np.abs(samples[:, 1].astype(np.int32))
        assert len(samples) / 16000 >= 3 * len(question) / 16000, "the WAV spans the whole conversation"
        assert (user > 1000).sum() > 16000 and (bot > 1000).sum() > 8000, "both sides are in it"

        # Two more sessions: only the newest two recordings are kept.
        for _ in range(2):
            async with AgentClient(server.ws_url) as client:
                await client.silence(0.6)
                assert await client.wait_for(lambda r: r.server_messages("session"), 20)
            await until(lambda: not server.registry.all(), 20, "the session to end")
        left = RecordingFolder(rec, 2, 10**9).recordings()
        assert len(left) == 2 and recording.stem not in {r.stem for r in left}
        assert all(p.exists() for r in left for p in r.files) and not jsonl.exists()


# --- One conversation: the same figures in the client message, the log line and /metrics ---


@pytest.mark.slow
async def test_turn_figures_agree_in_client_log_and_metrics(serve_app, speech, planted_keys, tmp_path, restore_logging):
    log_file = tmp_path / "agent.log"
    settings = local_settings(log_format="json", log_file=log_file, log_level="DEBUG")
    stdout = io.StringIO()
    configure_logging(settings, stream=stdout)
    for secret in settings.secrets():  # as a careless provider error might
        logger.warning(f"connect failed: wss://api.example/?api_key={secret}")

    # On two shared cores Whisper may need more than the default 5 s wait for a transcript.
    async with serve_app(user_turn_stop_timeout=30) as server:
        async with AgentClient(server.ws_url) as a, AgentClient(server.ws_url) as b:
            assert await a.wait_for(lambda r: r.server_messages("session"), 30)
            assert await b.wait_for(lambda r: r.server_messages("session"), 30)
            id_a = a.received.server_messages("session")[0]["session_id"]
            id_b = b.received.server_messages("session")[0]["session_id"]
            quiet = asyncio.create_task(b.silence_until(lambda r: False, 600))  # b stays, listening
            first = await ask(a, speech("What is the capital of France?"), 0)
            second = await ask(a, speech("What is the capital of Japan?"), 1)
            assert first["bot_text"] and second["bot_text"]
            async with httpx.AsyncClient() as http:
                metrics = metric_samples((await http.get(f"{server.url}/metrics")).text)
            quiet.cancel()
            await asyncio.gather(quiet, return_exceptions=True)
        await until(lambda: not server.registry.all(), 30, "both sessions to end")

    text = log_file.read_text()
    assert stdout.getvalue() == text, "stdout and LOG_FILE get the same JSON lines"
    lines = [json.loads(line)["record"] for line in text.splitlines()]  # every line is JSON
    for value in PLANTED.values():
        assert value not in text
    assert "[REDACTED]" in text

    def tagged(session_id):
        return [r for r in lines if r["extra"].get("session_id") == session_id]

    # Pipecat's own lines (its processors, transports, services) carry the session id too.
    names = {}
    for sid in (id_a, id_b):
        own = tagged(sid)
        assert sum(r["name"].startswith("pipecat.") for r in own) >= 5, f"Pipecat lines of {sid}"
        names[sid] = {n for r in own for n in PROCESSOR_NAME.findall(r["message"])}
        assert names[sid], f"no processor named in {sid}'s lines"
    assert not names[id_a] & names[id_b], "two sessions never share a processor's lines"
    untagged = {n for r in lines if "session_id" not in r["extra"] for n in PROCESSOR_NAME.findall(r["message"])}
    assert not untagged & (names[id_a] | names[id_b]), "a session's processor logged without its id"
    assert {r["extra"].get("turn") for r in tagged(id_a) if r["name"].startswith("pipecat.")} >= {1, 2}

    # One log line per turn, with the same figures the client got.
    turn_lines = [r["extra"] for r in tagged(id_a) if r["extra"].get("event") == "turn"]
    assert [t["turn"] for t in turn_lines] == [1, 2] and not [r for r in tagged(id_b) if r["extra"].get("event")]
    for client_turn, line in zip((first, second), turn_lines, strict=True):
        stages = client_turn["stages_ms"]
        assert line["stages_ms"] == stages and line["user_text"] == client_turn["user_text"]
        assert {"vad", "stt", "voice_to_voice"} <= set(stages), f"turn {line['turn']} misses a stage: {stages}"
        assert stages["voice_to_voice"] >= stages["vad"] + stages["stt"]
        m = line["moments_ms"]
        assert m["speech_end"] < m["vad_stop"] < m["stt_final"] < m["llm_first_output"] < m["tts_first_audio"]
        assert m["tts_first_audio"] <= m["bot_audio_out"]
        assert m["bot_audio_out"] - m["speech_end"] == pytest.approx(stages["voice_to_voice"], abs=0.2)

    # /metrics: histogram counts and sums are exactly the turns' figures.
    turns = (first, second)
    assert metrics[("voice_agent_turns_total", ())] == 2
    assert metrics[("voice_agent_live_sessions", ())] == 2
    assert metrics[("voice_agent_sessions_total", (("transport", "websocket"),))] == 2
    for stage in ("vad", "stt", "turn", "llm_ttft", "tts_ttfb"):
        values = [t["stages_ms"][stage] for t in turns if stage in t["stages_ms"]]
        key = (("stage", stage),)
        assert metrics[("voice_agent_stage_seconds_count", key)] == len(values) > 0
        assert metrics[("voice_agent_stage_seconds_sum", key)] == pytest.approx(sum(values) / 1000, abs=1e-9)
    assert metrics[("voice_agent_voice_to_voice_seconds_count", ())] == 2
    assert metrics[("voice_agent_voice_to_voice_seconds_sum", ())] == pytest.approx(
        sum(t["stages_ms"]["voice_to_voice"] for t in turns) / 1000, abs=1e-9)
