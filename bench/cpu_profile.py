"""Where a server process's CPU goes: py-spy samples it, and the samples are summed by
component (the first one named anywhere in a sample's stack) and by function (self time).
bench/capacity.py profiles its largest level with it (`--profile`)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

from bench.common import markdown_table

# A sample belongs to the first component (in this order) that any frame of its stack
# names: work a component hands to a thread pool (VAD, smart-turn) stays its own.
COMPONENTS = [
    ("RNNoise denoise (processors/denoise.py)", ("processors/denoise.py",)),
    ("smart-turn v3 model (end of turn)", ("smart_turn",)),
    ("Silero VAD (ONNX + analyzer)", ("vad/silero", "vad_analyzer", "vad_controller")),
    ("echo cancellation (processors/echo_cancel.py)", ("processors/echo_cancel.py", "livekit/")),
    ("speech gate (processors/speech_gate.py)", ("processors/speech_gate.py",)),
    ("turn metrics / state observers",
     ("processors/observers/turn_metrics.py", "processors/observers/turn_record.py",
      "processors/observers/session_state.py")),
    ("RTVI observer and messages", ("rtvi",)),
    ("logging (loguru, bot/logs.py)", ("loguru", "bot/logs.py")),
    ("WebSocket I/O + protobuf (transport, serializer)",
     ("websocket", "serializers/protobuf", "transports/websocket.py", "uvicorn", "starlette")),
    # The stand-ins' own methods, not the module: the fake server's entry point is in it too.
    ("fake STT/LLM/TTS services",
     ("run_stt (tests/support/fakes.py", "run_tts (tests/support/fakes.py",
      "process_frame (tests/support/fakes.py", "services/tts_service", "services/stt_service",
      "services/llm_service")),
    ("Pipecat frame machinery (processors, queues, observers)",
     ("pipecat/processors", "pipecat/pipeline", "pipecat/observers", "pipecat/utils",
      "pipecat/frames")),
    ("asyncio event loop", ("asyncio",)),
    # Worker threads of run_in_executor (per-session VAD and smart-turn pools) between jobs:
    # waking up, taking the GIL, reading the queue.
    ("thread-pool workers between jobs (executor hand-offs)", ("concurrent/futures/thread.py",)),
]


def profile(pid: int, secs: float, out_file: Path) -> bool:
    exe = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy is not installed (pip install py-spy, or the dev extra): no profile")
        return False
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(secs)), "--rate", "100",
           "--format", "raw", "--output", str(out_file), "--nonblocking"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not out_file.exists():
        print(f"py-spy failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        return False
    return True


def hot_spots(raw: Path, top: int = 12) -> tuple[str, str]:
    """Two tables from py-spy's collapsed stacks: by component, and by function (self)."""
    components: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        own[_short(leaf)] += n
        name = next(
            (label for label, keys in COMPONENTS
             if any(k in frame for frame in frames for k in keys)),
            "other",
        )
        components[name] += n
    if not total:
        return "(no samples)", ""
    by_component = markdown_table(
        ["component (a frame of it in the stack)", "% of server CPU samples"],
        [[k, f"{100 * v / total:.1f}"] for k, v in components.most_common()],
    )
    by_function = markdown_table(
        ["function (self time)", "% of samples"],
        [[f"`{k}`", f"{100 * v / total:.1f}"] for k, v in own.most_common(top)],
    )
    return by_component, by_function


def _short(frame: str) -> str:
    """'process (pipecat/x/y.py:12)' → 'process (x/y.py)'; paths shortened to the package."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name
