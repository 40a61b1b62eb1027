"""Ending a child process: ask it to stop, then insist."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, grace_secs: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_secs`; waits for the end."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_secs)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
