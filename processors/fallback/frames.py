"""What the fallback announces, how it is tuned, and the errors it tells apart."""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import SystemFrame


@dataclass
class FallbackPolicy:
    """The knobs of one stage's fallback (from FALLBACK_* settings)."""

    budget_secs: float  # first byte: STT from VAD stop, LLM from the context, TTS from the text
    retry_secs: float = 30.0
    retry_max_secs: float = 300.0
    hold_secs: float = 1.0  # 0: never say the hold phrase
    hold_phrase: str = "Sorry, one moment."
    apology: str = "Sorry, I'm having trouble answering right now. Please try again in a moment."
    local_timeout_secs: float = 10.0
    warm: bool = True  # prepare the local one when the session starts, not at the first fault
    reconnect_timeout_secs: float = 5.0

    def backoff(self, failures: int) -> float:
        """Seconds before the cloud is retried after `failures` failures in a row."""
        cap = max(self.retry_max_secs, self.retry_secs)
        return min(self.retry_secs * 2 ** max(failures - 1, 0), cap)


@dataclass
class ServiceFallbackFrame(SystemFrame):
    """A stage changed provider, or gave up.

    `event`: "fallback" (cloud → local, with the `reason`: error, timeout, disconnect,
    connect), "retry" (back to the cloud after the back-off) or "apology" (the local
    counterpart failed too). `retracted`: text the failed service had already produced
    for the answer was withdrawn (the local one answers from scratch).
    """

    stage: str = ""
    event: str = "fallback"
    reason: str = ""
    from_service: str = ""
    to_service: str = ""
    detail: str = ""
    redo: bool = False  # a turn was in flight: the local service redoes it
    retracted: bool = False


class ConnectTimeout(ConnectionError):
    """A cloud service was still connecting when its connect budget ran out."""

    def __init__(self, secs: float):
        super().__init__(f"not connected within {secs:g}s")


class ContextFreeError(RuntimeError):
    """A provider error tied to no request in flight (e.g. Cartesia's error without a
    `context_id`): the requests go on, and the first-byte watchdog judges each of them."""
