"""WAV files in and out: any WAV as mono int16 speech at a given rate, and a mono WAV written."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

WAV_FORMATS = {"WAV", "WAVEX", "RF64", "W64"}


class AudioFileError(ValueError):
    """An input that is not usable speech audio (missing, empty, not a WAV)."""


def load_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Any WAV → mono int16 at `sample_rate`. Anything else raises `AudioFileError`."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: the file is empty")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises a bare RuntimeError for unknown formats
        raise AudioFileError(f"{path}: not a WAV file ({e})") from e
    if info.format not in WAV_FORMATS:
        raise AudioFileError(f"{path}: not a WAV file (it is {info.format})")
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if audio.shape[0] == 0:
        raise AudioFileError(f"{path}: the WAV holds no audio")
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate)
    return (np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16)


def write_wav(path: Path, audio: bytes, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(audio)
