"""Adaptive VAD: false starts in a noisy room and missed soft questions, fixed vs adaptive.

    .venv/bin/python -m bench.adaptive_vad            # 6 rooms x 16 questions in 5 voices
    .venv/bin/python -m bench.adaptive_vad --smoke
    .venv/bin/python -m bench.adaptive_vad --denoisers rnnoise,webrtc,none

A minute or two of a room: questions in voices the bot has never heard, every 5-7 s, with
the room's sound under all of it. Rooms: a café (six other voices chattering, 10 dB under
the speaker), a street (pink noise, 10 dB under), a quiet room with a soft speaker (-52
dBFS, a hiss 25 dB under).
The VAD runs as the pipeline runs it (Silero over the shared model, 20 ms frames, after the
denoiser: each of `--denoisers` in turn) with the settings' fixed bar, and with
bot/turns/adaptive_vad.py. A false start is the VAD starting
outside every question (+0.5 s); a missed question is one it never started in.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from bench import voices
from bench.common import add_common_args, loadavg, markdown_table, report

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What time does the shop close?",
    "Can you book a table for two?",
    "How far is the station from here?",
    "What is the weather like tomorrow?",
    "Tell me a joke please.",
    "How do I reset my password?",
    "Which bus goes to the airport?",
    "What is my account balance?",
    "Is the museum open on Sunday?",
    "Play some relaxing music.",
    "How long does the pasta need to cook?",
    "Remind me to call my mother.",
    "What does this word mean?",
]
ROOMS = {
    "café (chatter, 10 dB SNR)": dict(kind="chatter", snr=10.0, level=-26.0),
    "café (babble noise, 10 dB SNR)": dict(kind="babble", snr=10.0, level=-26.0),
    "street (pink noise, 10 dB SNR)": dict(kind="pink", snr=10.0, level=-26.0),
    "loud street (pink noise, 5 dB SNR)": dict(kind="pink", snr=5.0, level=-26.0),
    "loud café (babble noise, 5 dB SNR)": dict(kind="babble", snr=5.0, level=-26.0),
    "quiet room, soft voice (-52 dBFS)": dict(kind="white", snr=25.0, level=-52.0),
}
RATE = 16000


def room_audio(questions, voice_names, level, kind, snr, seed=0):
    rng = np.random.default_rng(seed)
    track, spans, t = [np.zeros(int(3.0 * RATE))], [], 3.0  # the room heard before anyone asks
    for text, voice in zip(questions, itertools.cycle(voice_names)):
        speech = voices.synthesize(text, voice).astype(np.float64)
        active = np.abs(speech) > 300
        speech *= 10 ** ((level - 10 * np.log10(np.mean(speech[active] ** 2) / 32768.0**2)) / 20)
        spans.append((t, t + len(speech) / RATE))
        gap = rng.uniform(4.0, 6.0)
        track += [speech, np.zeros(int(gap * RATE))]
        t += len(speech) / RATE + gap
    clean = np.concatenate(track)
    noisy = voices.add_noise(
        np.clip(clean, -32768, 32767).astype(np.int16), snr, kind=kind, seed=seed
    )
    return noisy, spans


def vad_run(analyzer, audio) -> tuple[list[float], list[float]]:
    """(times the VAD started, times of every 20 ms frame it called speech)."""
    from pipecat.audio.vad.vad_analyzer import VADState

    analyzer.set_sample_rate(RATE)
    starts, speaking, previous, n = [], [], VADState.QUIET, int(0.02 * RATE)
    for i in range(0, len(audio) - n + 1, n):
        state = analyzer._run_analyzer(audio[i : i + n].tobytes())
        if state == VADState.SPEAKING and previous != VADState.SPEAKING:
            starts.append(i / RATE)
        if state == VADState.SPEAKING:
            speaking.append(i / RATE)
        previous = state
    return starts, speaking


def run(args) -> tuple[str, dict]:
    from pipecat.audio.vad.vad_analyzer import VADParams

    from bot.config import Settings
    from bot.local.silero_vad import SharedSileroVADAnalyzer
    from bot.turns.adaptive_vad import AdaptiveVADAnalyzer

    settings = Settings(_env_file=None)
    from bot.local.models import LocalModels

    models = LocalModels(settings)
    params = dict(
        confidence=settings.vad_confidence,
        start_secs=settings.vad_start_secs,
        stop_secs=settings.vad_stop_secs,
        min_volume=settings.vad_min_volume,
    )
    questions = QUESTIONS[:4] if args.smoke else QUESTIONS
    voice_names = voices.UNFAMILIAR[:5]  # the chatter's six voices are these and one more
    from processors.denoise import denoise

    denoisers = args.denoisers.split(",")[: 1 if args.smoke else None]
    vads = (("fixed", SharedSileroVADAnalyzer), ("adaptive", AdaptiveVADAnalyzer))
    rows, totals = [], {f"{d}, {v}": [0, 0] for d in denoisers for v, _ in vads}
    for (room, spec), denoiser in itertools.product(ROOMS.items(), denoisers):
        audio, spans = room_audio(questions, voice_names, spec["level"], spec["kind"], spec["snr"])
        if denoiser != "none":
            audio = denoise(audio, RATE, engine=denoiser)
        for name, cls in vads:
            analyzer = cls(session=models.silero_session, params=VADParams(**params))
            starts, speaking = vad_run(analyzer, audio)
            false = [s for s in starts if not any(a - 0.2 <= s <= b + 0.5 for a, b in spans)]
            # Speech the VAD heard where nobody asked anything (0.5 s of its stop allowed).
            outside = 0.02 * sum(
                1 for t in speaking if not any(a - 0.2 <= t <= b + 0.5 for a, b in spans)
            )
            missed = [
                q
                for q, (a, b) in zip(questions, spans)
                if not any(a - 0.2 <= s <= b + 0.5 for s in starts)
            ]
            totals[f"{denoiser}, {name}"][0] += len(false)
            totals[f"{denoiser}, {name}"][1] += len(missed)
            floor = getattr(analyzer, "noise_floor", None)
            rows.append(
                [
                    room,
                    denoiser,
                    name,
                    len(false),
                    f"{outside:.1f} s",
                    f"{len(missed)}/{len(spans)}",
                    "–" if floor is None else f"{floor:.2f} → bar {analyzer.params.min_volume:.2f}",
                ]
            )
        print(f"  {room}, {denoiser}: done", flush=True)
    table = markdown_table(
        [
            "room",
            "denoiser",
            "VAD",
            "false starts",
            "speech heard outside the questions",
            "missed questions",
            "noise floor → bar (0-1)",
        ],
        rows,
    )
    return table, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument(
        "--denoisers", default="rnnoise,webrtc,none",
        help="Comma-separated: what cleans the audio before the VAD (rnnoise, webrtc, none).",
    )
    args = parser.parse_args()
    load = loadavg()
    started = time.monotonic()
    table, totals = run(args)
    verdicts = [
        f"- {name} VAD: {f} false starts, {m} missed questions over all the rooms"
        for name, (f, m) in totals.items()
    ]
    report(
        args,
        "adaptive_vad",
        "Adaptive VAD",
        table=table,
        started_load=load,
        verdicts=verdicts,
        heading=f"adaptive VAD; load average at start {load}; {time.monotonic() - started:.0f} s",
    )


if __name__ == "__main__":
    main()
