"""Start and stop the loopback llama.cpp server (`bot.local.llm_server`) as a child process.

A child process keeps llama.cpp's threads and memory out of the event loop's process
and gives the local LLM the same HTTP interface as Groq.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from loguru import logger

from bot.config import Settings
from bot.processes import free_port, stop_process


class LLMServerProcess:
    def __init__(
        self,
        gguf: Path,
        settings: Settings,
        start_timeout_secs: float = 120.0,
        *,
        attached_url: str | None = None,
    ):
        self.gguf = gguf
        self.settings = settings
        self.start_timeout_secs = start_timeout_secs
        self.port = 0
        self._proc: subprocess.Popen | None = None
        self._attached_url = attached_url.rstrip("/") if attached_url else None
        self._log = tempfile.TemporaryFile()

    @classmethod
    def attach(cls, base_url: str, settings: Settings) -> LLMServerProcess:
        """A handle on a server some other process started (we never stop it)."""
        return cls(Path(), settings, attached_url=base_url)

    @property
    def base_url(self) -> str:
        if self._attached_url:
            return self._attached_url
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model_name(self) -> str:
        return self.settings.llm_model_name

    def start(self) -> None:
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "bot.local.llm_server",
            "--model",
            str(self.gguf),
            "--model-name",
            self.model_name,
            "--port",
            str(self.port),
            "--threads",
            str(self.settings.llm_threads),
            "--ctx",
            str(self.settings.llm_context_tokens),
            "--parent-pid",
            str(os.getpid()),
            *([] if self.settings.llm_context_shift else ["--no-context-shift"]),
        ]
        logger.info(f"Starting the local LLM server on 127.0.0.1:{self.port} ({self.gguf.name})")
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_secs
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"The local LLM server exited at start:\n{self._output_tail()}")
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"The local LLM server did not start in {self.start_timeout_secs}s")

    def warm_up(self) -> None:
        """One short completion with the real system prompt: fills caches and the KV prefix."""
        httpx.post(
            f"{self.base_url}/chat/completions",
            json={
                "model": self.model_name,
                "messages": [
                    {"role": "system", "content": self.settings.system_prompt},
                    {"role": "user", "content": "Hello."},
                ],
                "max_tokens": 8,
            },
            timeout=120.0,
        ).raise_for_status()

    def _output_tail(self) -> str:
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace")

    def stop(self) -> None:
        if self._proc:
            stop_process(self._proc, grace_secs=5)
        self._proc = None
