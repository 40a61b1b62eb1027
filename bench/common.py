"""What every benchmark shares: statistics, the machine's description and the results
file (the server under test: bench/server.py; the real-time microphone: bench/microphone.py).

Times are `time.monotonic()` seconds (one clock for the whole machine on Linux), taken on
the client: when a 20 ms microphone frame was handed to the WebSocket, when a message
arrived (`web.ws_client.AgentClient` stamps every arrival).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
# Everything the benches write but RESULTS.md: server logs and profiles (OUT_DIR) and the
# voice cache (bench/voices.py). BENCH_OUT_DIR moves it all (the tests: to their tmp_path).
OUT_ROOT = Path(os.environ.get("BENCH_OUT_DIR") or ROOT / "out")
OUT_DIR = OUT_ROOT / "bench"
SHARED_AUDIO = ROOT.parent / "shared" / "audio"
FRAME_SECS = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --- statistics --------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def p50(values) -> float | None:
    return percentile(values, 50)


def p95(values) -> float | None:
    return percentile(values, 95)


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- the machine ---------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "?"
    import pipecat

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "pipecat": getattr(pipecat, "__version__", "?"),
        "commit": commit or "?",
    }


def wait_for_quiet_machine(max_load: float, timeout_secs: float, poll_secs: float = 60.0) -> str:
    """Block until the 1-minute load average is below `max_load` (0 = do not wait)."""
    deadline = time.monotonic() + timeout_secs
    while max_load > 0:
        load = float(loadavg().split()[0])
        if load < max_load or time.monotonic() > deadline:
            break
        print(f"load average {load:.2f} >= {max_load}: waiting {poll_secs:.0f} s", flush=True)
        time.sleep(poll_secs)
    return loadavg()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="A few seconds' run that checks the bench works.")
    parser.add_argument(
        "--record",
        action="store_true",
        help="Write this run's section of bench/RESULTS.md (machine, command, date, table).",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        default=0.0,
        metavar="LOAD",
        help="Before measuring, wait until the 1-minute load average is below LOAD.",
    )


def shown_path(path: Path) -> str:
    """`path` as a report shows it: from the checkout's root when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def command_line() -> str:
    module = Path(sys.argv[0]).stem
    return (".venv/bin/python -m bench." + module
            + "".join(" " + shlex.quote(a) for a in sys.argv[1:]))


def report(args: argparse.Namespace, name: str, title: str, heading: str, table: str,
           started_load: str, *, verdicts: Iterable[str] = (), appendix: str = "",
           env: dict[str, str] | None = None) -> None:
    """Every bench's ending: its heading, verdicts and table printed (the table last), and
    with --record the same written into its section of RESULTS.md."""
    lines = "\n".join(verdicts)
    print(f"\n{heading}")
    print(lines + "\n" if lines else "")
    print(table)
    if args.record:
        body = (lines + "\n\n" if lines else "") + table + (f"\n\n{appendix}" if appendix else "")
        record(name, title, body, started_load, env)


def record(name: str, title: str, body: str, started_load: str,
           env: dict[str, str] | None = None) -> None:
    """Replace this bench's section of RESULTS.md (between its markers) with this run."""
    info = machine_info()
    env_text = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    section = "\n".join(
        [
            f"<!-- bench:{name} -->",
            f"### {title}",
            "",
            f"- command: `{(env_text + ' ') if env_text else ''}{command_line()}`",
            f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
            f"commit {info['commit']}",
            f"- machine: {info['nproc']} × {info['cpu']}, {info['ram']} RAM; "
            f"Python {info['python']}, Pipecat {info['pipecat']}",
            f"- load average (1/5/15 min) at start: {started_load}; at end: {loadavg()}",
            "",
            body.strip(),
            f"<!-- /bench:{name} -->",
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print(f"\nrecorded in {RESULTS.relative_to(ROOT)}")


# --- processes ----------------------------------------------------------------------------


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int | str = "self") -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE / 2**20


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants alive now (a server and its session processes)."""
    tree, stack = [], [pid]
    while stack:
        p = stack.pop()
        tree.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                stack += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return tree


def tree_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each process still alive among `pids`."""
    out = {}
    for p in pids:
        try:
            out[p] = cpu_seconds(p)
        except OSError:
            pass
    return out


def tree_rss_mb(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        try:
            total += rss_mb(p)
        except OSError:
            pass
    return total


# --- speech ---------------------------------------------------------------------------------


def speech_bounds(audio: np.ndarray, sample_rate: int = 16000) -> tuple[int, int]:
    """(first, last) sample of speech: 10 ms windows within 40 dB of the loudest one."""
    win = sample_rate // 100
    n = len(audio) // win
    if n == 0:
        return 0, len(audio)
    frames = audio[: n * win].astype(np.float64).reshape(n, win)
    db = 10 * np.log10(np.mean(frames**2, axis=1) / 32768.0**2 + 1e-12)
    threshold = max(db.max() - 40.0, -55.0)
    loud = np.flatnonzero(db >= threshold)
    return int(loud[0] * win), int((loud[-1] + 1) * win)


@dataclass
class Question:
    text: str
    audio: np.ndarray  # int16 mono, 16 kHz
    source: str = "synthesized"


def synthesize(texts: list[str], sample_rate: int = 16000) -> list[Question]:
    """Speak each text with the local Piper voice (the client's own copy)."""
    from bot.config import Settings
    from bot.local.models import LocalModels

    models = LocalModels(Settings(_env_file=None))
    try:
        return [Question(t, models.synthesize(t, sample_rate)) for t in texts]
    finally:
        models.close()


def shared_recordings(sample_rate: int = 16000) -> list[Question]:
    """The real human recordings in ../shared/audio, when they are there."""
    tsv = SHARED_AUDIO / "transcripts.tsv"
    if not tsv.exists():
        return []
    from transports.wav import load_wav

    questions = []
    for line in tsv.read_text().splitlines()[1:]:
        if line.strip():
            name, text = line.split("\t")[:2]
            questions.append(Question(text, load_wav(SHARED_AUDIO / name, sample_rate),
                                      "recording"))
    return questions
