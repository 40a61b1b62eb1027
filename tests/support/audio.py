"""Audio the tests hear: loudness, the shared human recordings, and what Whisper heard."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Real human recordings with transcripts, beside the repo (never committed).
SHARED_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "audio"


def rms(pcm: bytes) -> float:
    """Root-mean-square level of int16 PCM (0 for no samples)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def shared_transcripts() -> list[tuple[str, str]]:
    """(file name, transcript) of each shared recording; empty where they are absent."""
    tsv = SHARED_AUDIO / "transcripts.tsv"
    if not tsv.exists():
        return []
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:] if line.strip()]
    return [(r[0], r[1]) for r in rows]


async def transcripts(settings, models, audio: np.ndarray, conversation=None) -> list:
    """The TranscriptionFrames of the STT service our provider factory builds (shared model,
    greedy beam) for one utterance; `conversation`: the session's context so far."""
    from pipecat.frames.frames import TranscriptionFrame

    from bot.providers import create_stt

    stt = create_stt(settings, models)
    if conversation is not None:
        stt.follow_conversation(conversation)
    frames = [f async for f in stt.run_stt(audio.astype(np.int16).tobytes())]
    return [f for f in frames if isinstance(f, TranscriptionFrame)]


async def transcribe(settings, models, audio: np.ndarray) -> str:
    return " ".join(f.text for f in await transcripts(settings, models, audio))
