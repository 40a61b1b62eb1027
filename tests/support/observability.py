"""Shared by the observability tests: planted secrets, logging put back, /metrics parsed,
a made-up turn record."""

from __future__ import annotations

import sys

import pytest
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from processors.observers.turn_record import TurnRecord
from tests.support.settings import KEY_VARIABLES

PLANTED = {
    name: f"planted-{name.lower().replace('_', '-')}-7c1e9b"
    for name in (*KEY_VARIABLES, "ADMIN_TOKEN")
}


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


def synthetic_turn(session_id: str, n: int, interrupted: bool = False) -> TurnRecord:
    t0 = n * 10.0
    record = TurnRecord(
        session_id=session_id, turn=n, user_text=f"question {n}", interrupted=interrupted,
        speech_start_at=t0, speech_end_at=t0 + 1.0, vad_stop_at=t0 + 1.2,
        stt_final_at=t0 + 1.25 + n % 7 / 100,
        llm_request_at=t0 + 1.35, llm_first_output_at=t0 + 1.6, llm_first_text_at=t0 + 1.6,
        tts_first_audio_at=t0 + 1.75, bot_audio_out_at=t0 + 1.8 + n % 5 / 10,
    )
    record.bot_text_spoken = [f"answer {n}"]
    if interrupted:
        record.barge_in_at, record.bot_stopped_at = t0 + 2.5, t0 + 2.62
    return record
