"""A call through the echo canceller on a simulated clock: the bot (one synthetic voice)
talks, the microphone hears it back through a small room, late and quieter, and the user
(another voice) may talk over it (tests/test_echo_cancel.py, tests/test_echo_bound.py).
"""

from __future__ import annotations

import numpy as np
import soxr
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import InputAudioRawFrame

from bench import voices
from processors.echo_cancel import EchoCanceller, EchoReference

RATE, OUT_RATE = 16000, 24000
BOT = (
    "Photosynthesis is the process by which plants turn light, water and carbon dioxide into "
    "sugar and oxygen. It happens in the chloroplasts of the leaves, and it powers almost all "
    "life on earth."
)
USER = "What is the capital of France?"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def dbfs(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return 10 * np.log10(np.mean(x**2) / 32768.0**2 + 1e-12)


def room_echo(played: np.ndarray, gain_db: float, delay_secs: float) -> np.ndarray:
    """The loudspeaker's sound at the microphone: late, quieter, with a short reverb tail."""
    rng = np.random.default_rng(0)
    n = int(0.1 * RATE)
    impulse = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.02 * RATE))
    impulse[0] += 3.0
    impulse /= np.linalg.norm(impulse)
    echo = np.convolve(played, impulse)[: len(played)] * 10 ** (gain_db / 20)
    return np.concatenate([np.zeros(int(delay_secs * RATE)), echo])[: len(played)]


def call(
    echo_db: float | None,
    delay_secs: float,
    user_at: float | None = None,
    user_dbfs=-25.0,
    held_secs: float = 0.0,
    ask_over_echo: tuple[float, float] | None = None,
    after_secs: float = 2.0,
    bot: np.ndarray | None = None,
    user_voice: str = "flite-slt",
):
    """(microphone in, microphone out after the canceller, canceller, user segment).

    `held_secs`: the bot falls silent for this long after every 0.6 s of speech (held by
    barge-ins over its own early echo). `ask_over_echo=(since, at)`: at `at` seconds, how far
    the microphone stood over the echo since `since` goes in `canceller.asked_over_echo`.
    `bot`: the bot's audio at 16 kHz (default: BOT in an espeak voice)."""
    bot = voices.synthesize(BOT, "espeak-rp-slow") if bot is None else bot
    if held_secs:
        piece, gap = int(0.6 * RATE), np.zeros(int(held_secs * RATE), dtype=bot.dtype)
        pieces = (bot[i : i + piece] for i in range(0, len(bot), piece))
        bot = np.concatenate([x for p in pieces for x in (p, gap)])
    bot_24k = soxr.resample(bot.astype(np.float32), RATE, OUT_RATE).astype(np.int16)
    start, total = 0.5, len(bot) / RATE + after_secs
    played = np.zeros(int(total * RATE))
    played[int(start * RATE) : int(start * RATE) + len(bot)] = bot
    mic = np.zeros_like(played) if echo_db is None else room_echo(played, echo_db, delay_secs)
    segment = None
    if user_at is not None:
        user = voices.synthesize(USER, user_voice).astype(np.float64)
        user *= 10 ** ((user_dbfs - dbfs(user)) / 20)
        a = int(user_at * RATE)
        mic[a : a + len(user)] += user
        segment = slice(a, a + len(user))
    mic += np.random.default_rng(1).standard_normal(len(mic)) * 32768 * 10 ** (-70 / 20)
    mic = np.clip(mic, -32768, 32767).astype(np.int16)

    clock = Clock()
    reference = EchoReference(RATE, clock=clock)
    canceller = EchoCanceller(reference)
    events = []  # (time, order, kind, data): the tap sees a 40 ms chunk once it has played
    chunk = int(0.04 * OUT_RATE)
    for k, i in enumerate(range(0, len(bot_24k), chunk)):
        if bot_24k[i : i + chunk].any():  # a held bot sends nothing
            events.append((start + (k + 1) * 0.04, 0, "tap", bot_24k[i : i + chunk]))
    frame = int(0.02 * RATE)
    for i in range(0, len(mic) - frame + 1, frame):
        events.append(((i + frame) / RATE + 0.02, 1, "mic", mic[i : i + frame]))
    out, voice, present, pending, settled = [], [], [], [], []
    canceller.asked_over_echo = None
    for t, _, kind, data in sorted(events, key=lambda e: (e[0], e[1])):
        if ask_over_echo and clock.now < ask_over_echo[1] <= t:
            canceller.asked_over_echo = canceller.over_echo_db(ask_over_echo[0])
        clock.now = t
        if kind == "tap":
            reference.add(data.tobytes(), OUT_RATE)
        else:
            f = InputAudioRawFrame(audio=data.tobytes(), sample_rate=RATE, num_channels=1)
            assert canceller._process(f)
            out.append(np.frombuffer(f.audio, dtype=np.int16))
            voice.append(canceller.voice_over_echo())
            present.append(canceller.echo_present)
            pending.append(canceller.echo_pending)
            settled.append(canceller.echo_settled)
    # Per 20 ms frame, for the double-talk and onset tests.
    canceller.voice, canceller.present = np.array(voice), np.array(present)
    canceller.pending = np.array(pending)
    canceller.settled = np.array(settled)
    return mic, np.concatenate(out), canceller, segment


def speech_starts(audio: np.ndarray) -> list[float]:
    vad = SileroVADAnalyzer(params=VADParams())
    vad.set_sample_rate(RATE)
    starts, previous, n = [], VADState.QUIET, int(0.02 * RATE)
    for i in range(0, len(audio) - n + 1, n):
        state = vad._run_analyzer(audio[i : i + n].tobytes())
        if state == VADState.SPEAKING and previous != VADState.SPEAKING:
            starts.append(i / RATE)
        previous = state
    return starts
