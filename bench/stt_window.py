"""Whisper's encoder window: the stock 30 s against the fitted one (bot/local/whisper_window.py).

    .venv/bin/python -m bench.stt_window            # 32 utterances × 3 conditions × 2 windows
    .venv/bin/python -m bench.stt_window --smoke

The same model, the same utterances (the voice-to-voice bench's questions and some long
and short ones, spoken by the local voice; the shared real recordings when present), each
clean, with white noise at 10 dB SNR, and inside a VAD-like segment (0.2 s of silence
before, 0.56 s after): word error rate and transcription time per window size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import (add_common_args, fmt, loadavg, markdown_table, p50, p95, report,
                          shared_recordings, synthesize)
from bench.voice_to_voice import QUESTIONS

EXTRA = [
    "Tell me a short story about a dragon who learns to fly, and make it funny please.",
    ("I would like to book a table for four people tomorrow evening at seven, near the river "
     "if possible."),
    ("Okay. So my question is really simple. What time does the train to Boston leave on Sunday "
     "morning?"),
    "Yes.",
    "No thanks.",
    "Can you explain how photosynthesis works in a few sentences?",
]


def conditions(audio: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = audio.astype(np.float32) / 32768.0
    noise = rng.normal(0.0, 1.0, len(x)).astype(np.float32)
    noise *= np.sqrt(np.mean(x**2) / 10.0) / np.std(noise)  # 10 dB under the speech
    segment = np.concatenate([np.zeros(3200, np.float32), x, np.zeros(9000, np.float32)])
    return {"clean": x, "noise 10 dB": x + noise, "VAD segment": segment}


def main() -> None:
    from bot.config import Settings
    from bot.local.models import LocalModels
    from bot.local.whisper_window import WindowedWhisper
    from tests.text import word_error_rate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--window", type=float,
                        default=Settings(_env_file=None).whisper_window_secs)
    args = parser.parse_args()
    load = loadavg()
    texts = (QUESTIONS + EXTRA)[: 3 if args.smoke else None]
    utterances = [(q.text, q.audio) for q in synthesize(texts)]
    if not args.smoke:
        utterances += [(q.text, q.audio) for q in shared_recordings()]
    rng = np.random.default_rng(0)
    cases = [(text, cond, audio) for text, a in utterances
             for cond, audio in conditions(a, rng).items()]

    models = LocalModels(Settings(_env_file=None))
    models.warm_up(llm=False, tts=False)
    windows = {"stock 30 s": WindowedWhisper(models.whisper, window_secs=0),
               f"fitted ({args.window:g} s)": WindowedWhisper(models.whisper,
                                                              window_secs=args.window)}
    results: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for name, whisper in windows.items():
        for text, cond, audio in cases:
            start = time.perf_counter()
            segments, _ = whisper.transcribe(audio, language="en")
            heard = " ".join(s.text.strip() for s in segments)
            elapsed = (time.perf_counter() - start) * 1000
            errors, times = results.setdefault((name, cond), ([], []))
            errors.append(word_error_rate(text, heard))
            times.append(elapsed)
    names = list(windows)
    rows = []
    for cond in dict.fromkeys(c for _, c, _ in cases):
        (stock_wer, stock_ms), (fit_wer, fit_ms) = (results[(n, cond)] for n in names)
        rows.append([cond, len(stock_wer), f"{np.mean(stock_wer):.3f}", f"{np.mean(fit_wer):.3f}",
                     fmt(p50(stock_ms)), fmt(p50(fit_ms)), fmt(p95(stock_ms)), fmt(p95(fit_ms)),
                     f"{p50(stock_ms) / p50(fit_ms):.1f}×"])
    fitted = windows[names[1]]
    table = markdown_table(
        ["condition", "utterances", "WER stock", "WER fitted", "p50 ms stock", "p50 ms fitted",
         "p95 ms stock", "p95 ms fitted", "speed-up (p50)"], rows)
    table += (f"\n\nfitted window: {fitted.windowed_runs} transcripts, {fitted.fallbacks} handed "
              "back to the 30 s window (a runaway or unsure decode)\n")
    report(args, "stt_window", "Whisper's encoder window", table=table, started_load=load,
           heading=f"Whisper tiny.en, int8, greedy, {models.settings.whisper_threads} threads; "
                   f"load at start {load}")


if __name__ == "__main__":
    main()
