"""Child processes: a free loopback port to give one, and ending one (ask, then insist).

The one `free_port` of the project: the benches' and the tests' servers take theirs here too.
"""

from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    """A loopback port free now (bound, then closed again) for a child process to listen on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
