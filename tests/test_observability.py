"""Observability: per-turn records everywhere (client, log, /metrics, dashboard ring, recording),
structured logs tagged per session with secrets redacted, bounded rings and recordings."""

from __future__ import annotations

import asyncio
import io
import json
import re
import wave
from collections import Counter as Tally

import httpx
import numpy as np
import pytest
from loguru import logger

from bot.config import Settings
from bot.logs import configure_logging
from processors.recording import RecordingFolder, SessionRecorder
from tests.support.fakes import FakeProviders
from tests.support.observability import PLANTED, metric_samples, synthetic_turn
from tests.support.polling import until
from tests.support.server import ask
from tests.support.settings import local_settings
from web.ws_client import AgentClient

FAKE = FakeProviders()
MAX_BYTES = 400_000
PROCESSOR_NAME = re.compile(r"\b([A-Z][A-Za-z0-9]+#\d+)\b")


# --- Dashboard ring, events, /metrics and recording under 1,000 turns ----------------------


async def test_rings_recordings_and_metrics_stay_bounded_over_1000_turns(
        serve_app, tmp_path, monkeypatch):
    import web.observability as observability
    from bot.session import Session

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
            session = Session(settings=settings, models=server.app.state.models,
                              transport_kind="synthetic")
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

        await wait_events(lambda: Tally(e for e, _ in received)["session-ended"] >= 10,
                          "10 sessions ended")
        kinds = Tally(e for e, _ in received)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

        turn_events = [d["turn"] for e, d in received if e == "turn"]
        assert (len(turn_events) == 1000
                and Tally(t["session_id"] for t in turn_events) == {i: 100 for i in ids})
        assert kinds["session-started"] == 10 == kinds["session-ended"] and kinds["snapshot"] == 1
        # The last round's two recordings are left, whole: a third would fit RECORDING_MAX_SESSIONS
        # but not RECORDING_MAX_BYTES, so the oldest went.
        left = folder.recordings()
        assert sorted(r.stem.split("-", 1)[1] for r in left) == sorted(ids[-2:])
        for r in left:
            for path in r.files:
                if path.suffix == ".wav":
                    with wave.open(str(path)) as w:
                        assert (w.getnchannels() == 2 and w.getframerate() == 16000
                                and w.getnframes() > 0)
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


async def test_a_real_session_with_fake_providers_records_and_feeds_the_ring(
        serve_app, speech, tmp_path):
    rec = tmp_path / "rec"
    async with serve_app(FAKE, dashboard_session_turns=2, recording_enabled=True,
                         recording_audio=True, recording_dir=rec,
                         recording_max_sessions=2) as server:
        question = speech("What is the capital of France?")
        async with AgentClient(server.ws_url) as client:
            for n in range(3):
                turn = await ask(client, question, n, timeout=30)
                assert ("hello there" in turn["user_text"]
                        and turn["stages_ms"].get("voice_to_voice", 0) > 0), (n, turn)
            session_id = client.received.server_messages("session")[0]["session_id"]
            live = server.registry.get(session_id)
            assert [t["turn"] for t in live.history] == [2, 3], "the ring keeps the newest turns"
            assert [t["stages_ms"] for t in live.history] == [
                t["stages_ms"] for t in client.received.turns[1:]]
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
        assert len(samples) / 16000 >= 3 * len(question) / 16000, (
            "the WAV spans the whole conversation")
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
async def test_turn_figures_agree_in_client_log_and_metrics(
        serve_app, speech, planted_keys, tmp_path, restore_logging):
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
            first = await ask(a, speech("What is the capital of France?"), 0, timeout=240)
            second = await ask(a, speech("What is the capital of Japan?"), 1, timeout=240)
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
    untagged = {n for r in lines if "session_id" not in r["extra"]
                for n in PROCESSOR_NAME.findall(r["message"])}
    assert not untagged & (names[id_a] | names[id_b]), "a session's processor logged without its id"
    assert {r["extra"].get("turn") for r in tagged(id_a)
            if r["name"].startswith("pipecat.")} >= {1, 2}

    # One log line per turn, with the same figures the client got.
    turn_lines = [r["extra"] for r in tagged(id_a) if r["extra"].get("event") == "turn"]
    assert ([t["turn"] for t in turn_lines] == [1, 2]
            and not [r for r in tagged(id_b) if r["extra"].get("event")])
    for client_turn, line in zip((first, second), turn_lines, strict=True):
        stages = client_turn["stages_ms"]
        assert line["stages_ms"] == stages and line["user_text"] == client_turn["user_text"]
        assert {"vad", "stt", "voice_to_voice"} <= set(stages), (
            f"turn {line['turn']} misses a stage: {stages}")
        assert stages["voice_to_voice"] >= stages["vad"] + stages["stt"]
        m = line["moments_ms"]
        assert (m["speech_end"] < m["vad_stop"] < m["stt_final"] < m["llm_first_output"]
                < m["tts_first_audio"])
        assert m["tts_first_audio"] <= m["bot_audio_out"]
        assert m["bot_audio_out"] - m["speech_end"] == pytest.approx(
            stages["voice_to_voice"], abs=0.2)

    # /metrics: histogram counts and sums are exactly the turns' figures.
    turns = (first, second)
    assert metrics[("voice_agent_turns_total", ())] == 2
    assert metrics[("voice_agent_live_sessions", ())] == 2
    assert metrics[("voice_agent_sessions_total", (("transport", "websocket"),))] == 2
    for stage in ("vad", "stt", "turn", "llm_ttft", "tts_ttfb"):
        values = [t["stages_ms"][stage] for t in turns if stage in t["stages_ms"]]
        key = (("stage", stage),)
        assert metrics[("voice_agent_stage_seconds_count", key)] == len(values) > 0
        assert metrics[("voice_agent_stage_seconds_sum", key)] == pytest.approx(
            sum(values) / 1000, abs=1e-9)
    assert metrics[("voice_agent_voice_to_voice_seconds_count", ())] == 2
    assert metrics[("voice_agent_voice_to_voice_seconds_sum", ())] == pytest.approx(
        sum(t["stages_ms"]["voice_to_voice"] for t in turns) / 1000, abs=1e-9)
