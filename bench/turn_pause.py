"""Smart-turn's verdict at the first pause (~100 ms of quiet) against at the VAD stop (~250 ms).

    .venv/bin/python -m bench.turn_pause  # 32 questions, 12 unfinished fragments, the recordings
    .venv/bin/python -m bench.turn_pause --smoke

SMART_TURN_SPECULATE runs the model when the audio first pauses instead of at the VAD's
stop (bot/local/smart_turn.py), so it sees less trailing silence. This compares the two on
labelled utterances: finished questions (the voice-to-voice bench's, spoken by the local
voice, and the shared real recordings) and unfinished fragments ("I would like to order
a"): how often each verdict is right, and the model's time per verdict.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import (add_common_args, fmt, loadavg, markdown_table, p50, report,
                          shared_recordings, speech_bounds, synthesize)
from bench.voice_to_voice import LONG_QUESTIONS, QUESTIONS

FRAGMENTS = [
    "I would like to order a",
    "My name is, um, and I",
    "Can you tell me about",
    "What is the",
    "I think that the",
    "So the thing is",
    "Could you please",
    "I was wondering if",
    "The reason I called is",
    "Tell me about the",
    "How do I get to the",
    "Yesterday I went to",
]
PRE_SPEECH_SECS = 0.2
SILENCES_MS = {"at the pause (100 ms)": 100, "at 160 ms": 160, "at the VAD stop (250 ms)": 250}
PAUSE, STOP = "at the pause (100 ms)", "at the VAD stop (250 ms)"
EITHER = "finished at the pause, else at the VAD stop (SMART_TURN_SPECULATE)"


def main() -> None:
    from bot.config import Settings
    from bot.local.models import LocalModels
    from bot.local.smart_turn import SharedSmartTurnAnalyzer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    args = parser.parse_args()
    load = loadavg()
    finished = QUESTIONS + LONG_QUESTIONS
    fragments = FRAGMENTS
    if args.smoke:
        finished, fragments = finished[:2], fragments[:2]
    clips = ([(q.audio, True) for q in synthesize(finished)]
             + [(q.audio, False) for q in synthesize(fragments)])
    if not args.smoke:
        clips += [(q.audio, True) for q in shared_recordings()]
    models = LocalModels(Settings(_env_file=None))
    analyzer = SharedSmartTurnAnalyzer(session=models.smart_turn_session)
    analyzer.set_sample_rate(16000)
    right: dict[str, dict[bool, int]] = {name: {True: 0, False: 0}
                                         for name in [*SILENCES_MS, EITHER]}
    times: list[float] = []
    for audio, complete in clips:
        _, last = speech_bounds(audio)
        speech = audio[:last].astype(np.float32) / 32768.0
        verdicts = {}
        for name, ms in SILENCES_MS.items():
            segment = np.concatenate(
                [np.zeros(int(PRE_SPEECH_SECS * 16000), np.float32), speech,
                 np.zeros(16 * ms, np.float32)]
            )
            start = time.perf_counter()
            verdicts[name] = analyzer._predict_endpoint(segment)["prediction"] == 1
            times.append((time.perf_counter() - start) * 1000)
        verdicts[EITHER] = verdicts[PAUSE] or verdicts[STOP]
        for name, verdict in verdicts.items():
            right[name][complete] += verdict == complete
    n_finished = sum(1 for _, c in clips if c)
    n_fragments = len(clips) - n_finished
    rows = [
        [name, f"{r[True]}/{n_finished}", f"{r[False]}/{n_fragments}",
         f"{r[True] + r[False]}/{len(clips)}"]
        for name, r in right.items()
    ]
    table = markdown_table(["smart-turn judged", "finished judged finished",
                            "unfinished judged unfinished", "right in all"], rows)
    report(args, "turn_pause", "Smart-turn at the pause", table=table, started_load=load,
           heading=f"{len(clips)} utterances; model time per verdict p50 {fmt(p50(times))} ms; "
                   f"load at start {load}")


if __name__ == "__main__":
    main()
