"""`python -m bot chat`: clear exit without audio devices; a real conversation through a sound
server.

The device test runs a private PulseAudio server with two null sinks, a virtual sound card
that keeps real time: the agent's microphone is the monitor of the "mic" sink, into which
the test plays a question (`pacat`), and its speaker is the "speaker" sink, whose monitor
the test records (`parec`). The agent reaches it through ALSA's pulse plugin, as PyAudio
on a desktop would. (ALSA's own `file` + `null` plugins are not paced: they fed the
microphone thousands of times faster than real time, which no real microphone does.)
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.support.polling import until_sync
from tests.text import contains_words, normalise

ROOT = Path(__file__).resolve().parents[1]
SOUND_SERVER_CONFIG = """
load-module module-null-sink sink_name=mic rate=16000 channels=1
load-module module-null-sink sink_name=speaker rate=24000 channels=1
load-module module-native-protocol-unix
set-default-source mic.monitor
set-default-sink speaker
"""
SPEAKER_RATE = 24000


def chat(home: Path, stderr=subprocess.PIPE, **env) -> subprocess.Popen:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "MODEL_CACHE_DIR": str(Path.home() / ".cache" / "voice-agent"),
        "STT_PROVIDER": "local", "LLM_PROVIDER": "local", "TTS_PROVIDER": "local",
        # A debugging run's log level reaches the agent too.
        **{k: os.environ[k] for k in ("LOG_LEVEL",) if k in os.environ},
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "chat"], cwd=ROOT, env=environment,
        stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_no_audio_device_is_a_clear_error(tmp_path):
    (tmp_path / ".asoundrc").write_text("pcm.!default { type hw card 7 }\n")  # no such card
    proc = chat(tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    assert "no audio input (microphone) device" in err or "needs PyAudio" in err, err


@pytest.fixture
def sound_server(tmp_path):
    """A private PulseAudio server with a "mic" and a "speaker" sink; yields its client env."""
    for tool in ("pulseaudio", "pacat", "parec", "pactl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; "
                        "`make test` installs pulseaudio and pulseaudio-utils")
    runtime = tmp_path / "pulse"
    runtime.mkdir()
    (runtime / "server.pa").write_text(SOUND_SERVER_CONFIG)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "XDG_RUNTIME_DIR": str(runtime), "PULSE_RUNTIME_PATH": str(runtime),
           "PULSE_SERVER": f"unix:{runtime / 'native'}"}
    # The agent's ALSA default device is that server.
    (tmp_path / ".asoundrc").write_text(
        "pcm.!default { type pulse }\nctl.!default { type pulse }\n")
    server = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
         "-F", str(runtime / "server.pa"), f"--log-target=file:{runtime / 'server.log'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server_log = runtime / "server.log"
        until_sync(lambda: server.poll() is not None or pactl(env, "info") is not None,
                   30, "the sound server",
                   details=lambda: (server_log.read_text()[-2000:] if server_log.exists()
                                    else "(no log)"))
        assert server.poll() is None, server_log.read_text()[-2000:]
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


def pactl(env: dict, *args: str) -> str | None:
    done = subprocess.run(["pactl", *args], env=env, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def audible_span(audio: np.ndarray, rate: int, threshold: int = 1000) -> np.ndarray:
    """The audio from its first to its last loud sample, with a little margin."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if not len(loud):
        return audio[:0]
    margin = int(0.3 * rate)
    return audio[max(0, loud[0] - margin): loud[-1] + margin]


@pytest.mark.slow
async def test_conversation_through_a_sound_device(
        tmp_path, sound_server, speech, settings, models):
    pytest.importorskip("pyaudio", reason="the mic extra (PyAudio) is not installed; "
                                          "`make test` installs it")
    import soxr

    from tests.support.audio import transcribe

    question = tmp_path / "question.raw"
    speech("What is the capital of France?").astype("<i2").tofile(question)
    log = tmp_path / "agent.log"
    heard_file = tmp_path / "speaker.raw"
    pulse = {k: v for k, v in sound_server.items() if k != "PATH"}

    with open(log, "w") as log_out, open(heard_file, "wb") as heard_out:
        proc = chat(tmp_path, stderr=log_out, **pulse)
        printed: list[str] = []
        reader = threading.Thread(target=lambda: printed.extend(proc.stdout), daemon=True)
        reader.start()
        recorder = None

        def agent_log() -> str:  # for every failure below
            return log.read_text()[-3000:]

        try:
            # The microphone is open once the agent records from the sound server (the only
            # recording stream until ours starts).
            await asyncio.to_thread(until_sync, lambda: proc.poll() is not None or bool(
                (pactl(sound_server, "list", "short", "source-outputs") or "").strip()), 240,
                "the agent to open its microphone", details=agent_log)
            assert proc.poll() is None, agent_log()
            recorder = subprocess.Popen(
                ["parec", "-d", "speaker.monitor", "--format=s16le", f"--rate={SPEAKER_RATE}",
                 "--channels=1", "--raw", "--latency-msec=20"], env=sound_server, stdout=heard_out)
            # Spoken into the microphone in real time.
            play = await asyncio.to_thread(subprocess.run, [
                "pacat", "--playback", "-d", "mic", "--format=s16le", "--rate=16000",
                "--channels=1", "--raw", str(question)], env=sound_server, capture_output=True)
            assert play.returncode == 0, play.stderr

            def answered_and_played() -> bool:
                # The turn is printed when the bot stops speaking; its audio is then in the
                # recording once a second of silence follows it.
                if proc.poll() is not None or not any("bot:" in line for line in printed):
                    return proc.poll() is not None
                tail = np.fromfile(heard_file, dtype="<i2")[-SPEAKER_RATE:]
                return len(tail) == SPEAKER_RATE and np.abs(tail).max() < 1000

            await asyncio.to_thread(until_sync, answered_and_played, 180,
                                    "the answer to be printed and played",
                                    details=lambda: f"{''.join(printed)[-1000:]}\n--- log ---\n"
                                                    f"{agent_log()}")
            assert proc.poll() is None, agent_log()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            reader.join(timeout=10)
            if recorder is not None:
                recorder.terminate()
                recorder.wait(timeout=10)
    heard = np.fromfile(heard_file, dtype="<i2")
    out = "".join(printed)
    # What the agent printed and the tail of its log, for any assertion below.
    seen = f"{out[-2000:]}\n--- log ---\n{log.read_text()[-6000:]}"
    assert np.count_nonzero(np.abs(heard) > 1000) > 12000, f"no clearly audible answer\n{seen}"
    # The microphone was heard: the question is in the printed transcript.
    you = [line.split("you:", 1)[1] for line in out.splitlines() if "you:" in line]
    assert any(contains_words(line, "capital", "France") for line in you), seen
    # The speaker played the answer the bot printed (what it says is the LLM's business).
    answer = next(line.split("bot:", 1)[1] for line in out.splitlines() if "bot:" in line)
    spoken = soxr.resample(audible_span(heard, SPEAKER_RATE), SPEAKER_RATE, 16000).astype(np.int16)
    text = await transcribe(settings, models, spoken)
    words = set(normalise(answer).split())
    assert len(words & set(normalise(text).split())) >= 0.6 * len(words), (answer, text)
