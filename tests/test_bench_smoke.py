"""The benchmarks still run: each for a few seconds (`--smoke`), checked by its final table.

No wall-clock assertions (the figures belong to bench/RESULTS.md); they all run at once,
as subprocesses, exactly as `.venv/bin/python -m bench.<name> --smoke` is run by hand.
The voice-to-voice and barge-in benches use the instant fake providers here, so no model
has to load; the measuring code is the same as with the local stack.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pipecat.frames.frames import (
    AggregatedTextFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TextFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from processors.sequential_bridge import SequentialBridge

ROOT = Path(__file__).resolve().parents[1]
FAKE = {"BENCH_FAKE": "stt,llm,tts"}  # the instant stand-ins (tests/support/fakes.py)
# The spoken-QA smoke checks the bench's own path (real voices, Whisper, the judge): its
# answers come from the instant LLM; the real one is judged by tests/test_spoken_answers.py.
BENCHES = {"voice_to_voice": FAKE, "barge_in": FAKE, "capacity": {}, "soak": {}, "frame_cost": {},
           "stt_window": {}, "llm_context": {}, "turn_pause": {},
           "spoken_qa": {"BENCH_FAKE": "llm"}, "sentence_turns": {},
           "adaptive_vad": {},
           "backchannels": {}}
NUMBER = r"-?\d+(\.\d+)?"

# --- the sequential bridge (processors/sequential_bridge.py) ---------------------------------

async def test_sequential_bridge_releases_the_whole_reply_at_its_end():
    down, _ = await run_test(
        SequentialBridge(),
        frames_to_send=[
            LLMFullResponseStartFrame(),
            LLMTextFrame("Paris is "),
            TextFrame("passes"),
            LLMTextFrame("the capital."),
            LLMFullResponseEndFrame(),
        ],
        expected_down_frames=[
            LLMFullResponseStartFrame,
            TextFrame,
            AggregatedTextFrame,
            LLMFullResponseEndFrame,
        ],
    )
    assert down[1].text == "passes"
    assert down[2].text == "Paris is the capital."

async def test_sequential_bridge_drops_held_text_on_interruption():
    down, _ = await run_test(
        SequentialBridge(),
        frames_to_send=[
            LLMFullResponseStartFrame(),
            LLMTextFrame("An answer nobody wants any more."),
            SleepFrame(sleep=0.1),  # the text is held before the interruption comes
            InterruptionFrame(),
            LLMFullResponseEndFrame(),
        ],
        expected_down_frames=[LLMFullResponseStartFrame, InterruptionFrame,
                              LLMFullResponseEndFrame],
    )
    assert not any(isinstance(f, AggregatedTextFrame) for f in down)

# --- the benchmarks ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Start every bench's --smoke run at once; their outputs by name. What they write (server
    logs, the voice cache: bench/common.py OUT_ROOT) goes to a tmp dir, not the checkout."""
    out_dir = tmp_path_factory.mktemp("bench-out")
    procs = {}
    for name, env in BENCHES.items():
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"bench.{name}", "--smoke"],
            cwd=ROOT,
            env={**os.environ, "BENCH_OUT_DIR": str(out_dir), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    outputs = {}
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        outputs[name] = (proc.returncode, out)
    return outputs

def table(output: str) -> dict[str, list[str]]:
    """The last markdown table of the output: first cell → the other cells."""
    blocks = re.findall(r"((?:^\|.*\|\n?)+)", output, re.M)
    assert blocks, output[-3000:]
    rows = {}
    for line in blocks[-1].strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows

def result(smoke_runs, name):
    code, out = smoke_runs[name]
    assert code == 0, out[-4000:]
    return table(out), out

@pytest.mark.slow
def test_voice_to_voice_smoke(smoke_runs):
    rows, out = result(smoke_runs, "voice_to_voice")
    measured = [int(n) for n in rows["turns measured"][:2]]
    problems = [int(n) for n in rows["turns without a usable answer"][:2]]
    # Two short and one long-answer question per variant; on a loaded machine one may go
    # unanswered, not all.
    assert [m + p for m, p in zip(measured, problems)] == [3, 3] and min(measured) >= 2, out[-3000:]
    streaming, sequential, ratio = rows["client voice-to-voice p50 (ms)"]
    assert re.fullmatch(NUMBER, streaming) and re.fullmatch(NUMBER, sequential), out[-3000:]
    assert re.fullmatch(NUMBER + "×", ratio), rows
    assert "vad p50 (ms)" in {k.strip() for k in rows}
    assert "long-answer questions, LLM request → first audio p50 (ms)" in {k.strip() for k in rows}
    assert "target streaming bridge" in out or "target local voice-to-voice" in out

@pytest.mark.slow
def test_barge_in_smoke(smoke_runs):
    rows, out = result(smoke_runs, "barge_in")
    measured = int(rows["interruptions measured"][0])
    assert measured >= 1, out[-3000:]
    stop = rows["stop time p50 (ms), client: first speech sample → last bot audio byte"][0]
    assert re.fullmatch(NUMBER, stop), rows
    assert re.fullmatch(r"\d+", rows["false user turns from echo (-20 dB)"][0]), rows
    assert "target barge-in stop p50 <= 250 ms" in out

@pytest.mark.slow
def test_backchannels_smoke(smoke_runs):
    rows, out = result(smoke_runs, "backchannels")
    assert rows["backchannels (5 words × voices)"] == ["1"], rows
    assert rows["real interruptions (wait, stop, questions × voices)"] == ["1"], rows
    assert re.fullmatch(r"[01]", rows["… that interrupted the bot"][0]), rows
    assert re.fullmatch(r"[01]", rows["… that stopped the bot"][0]), rows
    assert "backchannels that interrupted the bot" in out

@pytest.mark.slow
def test_capacity_smoke(smoke_runs):
    rows, out = result(smoke_runs, "capacity")
    assert set(rows) == {"1", "1 (repeat)", "2"}, rows
    turns, v2v_p50, held = rows["1"][0], rows["1"][1], rows["1"][12]
    # A turn smart-turn held to its timeout is left out of the latency figures; with every
    # bench running at once, the few turns of a smoke run can all be held.
    assert int(turns) >= 1 and (re.fullmatch(NUMBER, v2v_p50) or held == turns), out[-3000:]
    for cells in rows.values():
        assert (re.fullmatch(r"\d+", cells[0])
                and re.fullmatch(NUMBER, cells[8])), rows  # turns, CPU/session
        assert re.fullmatch(r"\d+ \(\d+ ms\)", cells[6]), rows  # underruns (silence)
    assert "largest N in real time" in out

@pytest.mark.slow
def test_soak_smoke(smoke_runs):
    rows, out = result(smoke_runs, "soak")
    turns = int(rows["turns (unanswered)"][0].split()[0])
    assert turns >= 1, rows
    growth = next(v for k, v in rows.items() if k.startswith("RSS growth after"))[0]
    assert re.fullmatch(r"[+-]\d+\.\d+ % / [+-]\d+\.\d+ %", growth), rows
    assert re.search(r"context messages .* → end", "\n".join(rows)), rows
    assert "target RSS growth < 5 %" in out


@pytest.mark.slow
def test_frame_cost_smoke(smoke_runs):
    rows, _ = result(smoke_runs, "frame_cost")
    names = " ".join(rows)
    for component in ("RNNoise", "WebRTC noise", "Silero VAD", "echo cancellation", "protobuf"):
        assert component in names, rows
    assert all(re.fullmatch(NUMBER, cells[0]) for cells in rows.values()), rows


@pytest.mark.slow
def test_stt_window_smoke(smoke_runs):
    rows, out = result(smoke_runs, "stt_window")
    assert set(rows) == {"clean", "noise 10 dB", "VAD segment"}, rows
    for cells in rows.values():
        assert cells[0] == "3" and all(re.fullmatch(NUMBER, c) for c in cells[1:7]), cells
    counts = re.search(r"fitted window: (\d+) transcripts, (\d+) handed back", out)
    # 3 utterances × 3 conditions
    assert counts and sum(map(int, counts.groups())) == 9, out[-2000:]


@pytest.mark.slow
def test_llm_context_smoke(smoke_runs):
    rows, out = result(smoke_runs, "llm_context")
    assert set(rows) == {"before the first trim", "after it"}, rows
    before, after = rows["before the first trim"], rows["after it"]
    assert int(before[0]) + int(after[0]) == 5, rows  # turns 2–6 (the first reads the tool prompt)
    assert int(after[0]) >= 1 and all(re.fullmatch(NUMBER, c) for c in after), rows
    # After a trim the shifted cache reads only the new turn; the plain prefix cache reads more.
    assert int(after[7]) < int(after[3]), rows


@pytest.mark.slow
def test_turn_pause_smoke(smoke_runs):
    rows, _ = result(smoke_runs, "turn_pause")
    assert len(rows) == 4, rows
    for cells in rows.values():  # 2 finished questions and 2 fragments
        assert re.fullmatch(r"[0-2]/2", cells[0]) and re.fullmatch(r"[0-2]/2", cells[1]), cells
        assert re.fullmatch(r"[0-4]/4", cells[2]), cells


@pytest.mark.slow
def test_spoken_qa_smoke(smoke_runs):
    rows, out = result(smoke_runs, "spoken_qa")
    # The category table: three items (a general question, a near-kb one, a follow-up), each
    # asked over /ws in an unfamiliar voice and judged.
    assert sum(int(cells[0].split("/")[1].split()[0]) for cells in rows.values()) == 3, rows
    assert all(re.fullmatch(r"\d+/\d+ \(\d+ %\)", cells[0]) for cells in rows.values()), rows
    assert re.search(r"\| flite-slt \| clean \| \d+/3 ", out), out[-3000:]
    assert "right answers, clean:" in out and "knowledge-base leaks:" in out


@pytest.mark.slow
def test_sentence_turns_smoke(smoke_runs):
    rows, out = result(smoke_runs, "sentence_turns")
    assert set(rows) == {"stock", "ours"}, rows
    for cells in rows.values():  # 2 comma questions in 2 voices, 8 turns in all
        assert (re.fullmatch(r"[0-4]/4 \(\d+ %\)", cells[0])
                and re.fullmatch(r"[0-8]/8", cells[3])), cells
    assert "false cut-offs" in out


@pytest.mark.slow
def test_adaptive_vad_smoke(smoke_runs):
    rows, out = result(smoke_runs, "adaptive_vad")
    assert len(rows) == 6, rows  # the first cell is the room: two rows each, the last wins
    assert "fixed VAD:" in out and "adaptive VAD:" in out
