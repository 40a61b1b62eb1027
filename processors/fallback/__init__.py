"""Provider fallback: when a cloud stage fails, its local counterpart answers the turn.

`bot/providers.py` wraps each cloud service (with FALLBACK_ENABLED) in one of these
switchers, Pipecat `ServiceSwitcher`s over ``[cloud, local]`` with its failover strategy:

    STTFallback  Deepgram → Whisper
    LLMFallback  Groq → llama.cpp
    TTSFallback  Cartesia → Piper

| module | what |
|---|---|
| `switcher.py` | the switch, back-off, hold phrase and apology shared by every stage |
| `watchdog.py` | `FirstByteWatchdog`: no first byte within the stage's budget is a failure |
| `stt.py`, `llm.py`, `tts.py` | what each stage tracks and how it redoes a turn locally |
| `frames.py` | `FallbackPolicy`, `ServiceFallbackFrame` (counted by the observers), errors |
| `lazy.py` | local models fetched only when a fallback may need them |
"""

from processors.fallback.frames import (
    ConnectTimeout,
    ContextFreeError,
    FallbackPolicy,
    ServiceFallbackFrame,
)
from processors.fallback.lazy import LazyModel, LazyModels, PendingServer
from processors.fallback.llm import LLMFallback
from processors.fallback.stt import STTFallback
from processors.fallback.switcher import FallbackSwitcher, Muteable
from processors.fallback.tts import TTSFallback
from processors.fallback.watchdog import FirstByteWatchdog

__all__ = [
    "ConnectTimeout",
    "ContextFreeError",
    "FallbackPolicy",
    "FallbackSwitcher",
    "FirstByteWatchdog",
    "LLMFallback",
    "LazyModel",
    "LazyModels",
    "Muteable",
    "PendingServer",
    "STTFallback",
    "ServiceFallbackFrame",
    "TTSFallback",
    "create_fallback",
]


def create_fallback(stage: str, cloud, local, policy: FallbackPolicy, **kwargs) -> FallbackSwitcher:
    """The switcher for `stage` ("stt", "llm" or "tts") over a cloud and a local service."""
    cls = {"stt": STTFallback, "llm": LLMFallback, "tts": TTSFallback}[stage]
    return cls(cloud, local, policy, **kwargs)
