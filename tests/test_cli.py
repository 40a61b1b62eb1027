"""`python -m bot talk` refuses bad input with a clear message and exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def talk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot", "talk", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def outputs(tmp_path):
    return ["--out", str(tmp_path / "reply.wav"), "--transcript", str(tmp_path / "turns.jsonl")]


def test_missing_file(tmp_path, outputs):
    result = talk("--in", str(tmp_path / "nope.wav"), *outputs)
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_empty_file(tmp_path, outputs):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    result = talk("--in", str(empty), *outputs)
    assert result.returncode == 2
    assert "empty" in result.stderr


def test_not_a_wav(tmp_path, outputs):
    text = tmp_path / "notes.wav"
    text.write_text("these are not audio samples\n" * 20)
    result = talk("--in", str(text), *outputs)
    assert result.returncode == 2
    assert "not a WAV" in result.stderr


def test_another_audio_format_is_refused(tmp_path, outputs):
    import numpy as np
    import soundfile as sf

    flac = tmp_path / "speech.flac"
    sf.write(flac, np.zeros(16000, dtype=np.int16), 16000, format="FLAC")
    result = talk("--in", str(flac), *outputs)
    assert result.returncode == 2
    assert "not a WAV" in result.stderr and "FLAC" in result.stderr


def test_wav_without_samples(tmp_path, outputs):
    import numpy as np
    import soundfile as sf

    silent = tmp_path / "nothing.wav"
    sf.write(silent, np.zeros(0, dtype=np.int16), 16000)
    result = talk("--in", str(silent), *outputs)
    assert result.returncode == 2
    assert "no audio" in result.stderr


def test_more_at_than_follow_up_questions(tmp_path, outputs):
    result = talk("--in", str(tmp_path / "a.wav"), "--at", "3", *outputs)
    assert result.returncode == 2
    assert "--at" in result.stderr
