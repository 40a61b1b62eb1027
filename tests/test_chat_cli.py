"""`python -m bot chat`: clear exit without audio devices; a real conversation through ALSA.

The device test builds a virtual sound card from ALSA's `file` plugin: the microphone
reads a question from a raw file, the speaker writes the bot's voice to another.
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.text import contains_words, normalise

ROOT = Path(__file__).resolve().parents[1]
ASOUNDRC = """
pcm.!default {{ type asym capture.pcm "mic" playback.pcm "speaker" }}
pcm.mic {{ type file slave.pcm "nullsink" file "/dev/null" infile "{mic}" format "raw" }}
pcm.speaker {{ type file slave.pcm "nullsink" file "{speaker}" format "raw" }}
pcm.nullsink {{ type null }}
"""


def chat(home: Path, **env) -> subprocess.Popen:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "MODEL_CACHE_DIR": str(Path.home() / ".cache" / "voice-agent"),
        "STT_PROVIDER": "local", "LLM_PROVIDER": "local", "TTS_PROVIDER": "local",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "chat"], cwd=ROOT, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_no_audio_device_is_a_clear_error(tmp_path):
    (tmp_path / ".asoundrc").write_text("pcm.!default { type hw card 7 }\n")  # no such card
    proc = chat(tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    assert "no audio input (microphone) device" in err or "needs PyAudio" in err, err


@pytest.mark.slow
async def test_conversation_through_a_sound_device(tmp_path, speech, settings, models):
    pytest.importorskip("pyaudio", reason="the mic extra (PyAudio) is not installed; `make test` installs it")
    import soxr

    from tests.test_stt import transcribe

    mic, speaker = tmp_path / "mic.raw", tmp_path / "speaker.raw"
    question = speech("What is the capital of France?")
    silence = np.zeros(16000 * 30, dtype=np.int16)
    np.concatenate([np.zeros(8000, np.int16), question, silence]).astype("<i2").tofile(mic)
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(mic=mic, speaker=speaker))

    proc = chat(tmp_path)
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        # Wait for the turn to be printed (a tool call's filler and the search can leave
        # gaps in the audio), then for the speaker file to stop growing: it has played out.
        deadline = time.monotonic() + 180
        last_size, still_since = -1, time.monotonic()
        while time.monotonic() < deadline and proc.poll() is None:
            size = speaker.stat().st_size if speaker.exists() else 0
            if size != last_size:
                last_size, still_since = size, time.monotonic()
            elif any("bot:" in line for line in printed) and time.monotonic() - still_since > 2.0:
                break
            await asyncio.sleep(0.25)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        heard = np.fromfile(speaker, dtype="<i2")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        reader.join(timeout=10)
    out = "".join(printed)
    assert np.count_nonzero(np.abs(heard) > 1000) > 12000, "no clearly audible answer"
    # The microphone was heard: the question is in the printed transcript.
    you = [line.split("you:", 1)[1] for line in out.splitlines() if "you:" in line]
    assert any(contains_words(line, "capital", "France") for line in you), out[-2000:]
    # The speaker played the answer the bot printed (what it says is the LLM's business).
    answer = next(line.split("bot:", 1)[1] for line in out.splitlines() if "bot:" in line)
    text = await transcribe(settings, models, soxr.resample(heard, 24000, 16000).astype(np.int16))
    printed = set(normalise(answer).split())
    assert len(printed & set(normalise(text).split())) >= 0.6 * len(printed), (answer, text)
