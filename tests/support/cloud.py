"""Loopback cloud peers and a scripted harness for driving one Pipecat service against them.

The machine has no route to Deepgram, Groq, Cartesia, Tavily or Daily, so each provider is
replaced by a small server in `tests/peers/` that speaks its documented wire protocol.
Every Pipecat service the tests drive is built by OUR factory (`create_stt/create_llm/
create_tts`) from a `Settings` whose keys are dummies and whose base URLs point at the peers.

Services are driven with `pipecat.tests.utils.run_test`. Its frames are pushed at once,
so a `Gate` placed before the service holds `Await` markers until a condition holds (a
frame came out, the peer saw a message...) — nothing here sleeps and hopes. Every wait is
bounded and fails with the condition it was waiting for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import (
    ControlFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    TranscriptionFrame,
    TTSStoppedFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import run_test

from bot.config import Settings
from tests.peers.cartesia import CartesiaPeer
from tests.peers.deepgram import DeepgramPeer
from tests.peers.groq import GroqPeer
from tests.support.polling import poll

DG_KEY = "dg-loopback-key"
GROQ_KEY = "gsk-loopback-key"
CARTESIA_KEY = "sk-cartesia-loopback-key"

IN_RATE = 16000
OUT_RATE = 24000
WAIT = 15.0  # generous bound for anything that should happen promptly


# --------------------------------------------------------------------------------------
# Harness: settings, frames, the gate and the recorder
# --------------------------------------------------------------------------------------


def cloud_settings(
    *,
    deepgram: DeepgramPeer | None = None,
    groq: GroqPeer | None = None,
    cartesia: CartesiaPeer | None = None,
    dg_key: str = DG_KEY,
    **overrides,
) -> Settings:
    """Settings with every stage on its cloud provider, base URLs on the given peers."""
    values: dict[str, Any] = dict(
        _env_file=None,
        stt_provider="cloud",
        llm_provider="cloud",
        tts_provider="cloud",
        deepgram_api_key=dg_key,
        groq_api_key=GROQ_KEY,
        cartesia_api_key=CARTESIA_KEY,
        tavily_api_key=None,
        daily_api_key=None,
        # These tests pin down the bare cloud wiring; tests/fallback/ covers the
        # local fallback around it.
        fallback_enabled=False,
    )
    if deepgram:
        values["deepgram_base_url"] = deepgram.ws_url
    if groq:
        values["groq_base_url"] = f"{groq.base_url}/openai/v1"
    if cartesia:
        values["cartesia_base_url"] = cartesia.ws_url
    values.update(overrides)
    return Settings(**values)


class NoLocalModels:
    """Stands in for LocalModels where cloud settings must not touch a local model."""

    def __getattr__(self, name):
        raise AssertionError(f"a cloud provider touched LocalModels.{name}")


def tone(secs: float, rate: int = IN_RATE, amplitude: int = 8000, freq: float = 220.0):
    t = np.arange(int(secs * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def silence(secs: float, rate: int = IN_RATE):
    return np.zeros(int(secs * rate), dtype=np.int16)


def mic_frames(*parts: np.ndarray, rate: int = IN_RATE) -> list[InputAudioRawFrame]:
    """20 ms microphone frames, as a transport delivers them."""
    audio = np.concatenate(parts)
    n = int(rate * 0.02)
    return [
        InputAudioRawFrame(audio=audio[i : i + n].tobytes(), sample_rate=rate, num_channels=1)
        for i in range(0, len(audio), n)
    ]


@dataclass
class Await(ControlFrame):
    """Script marker for `Gate`: hold every later script frame until `until()` is true."""

    until: Callable[[], Any] = field(default=lambda: True)
    what: str = "a condition"
    timeout: float = WAIT


@dataclass
class Observe(ControlFrame):
    """Script marker for `Gate`: watch for up to `secs` (less if `stop_early()` turns true).

    For asserting that something does NOT happen: the window is explicit and bounded.
    """

    secs: float = 2.0
    stop_early: Callable[[], Any] = field(default=lambda: False)


@dataclass
class Send(ControlFrame):
    """Script marker for `Gate`: push `frame` (typically a system frame) at this point."""

    frame: Frame | None = None


@dataclass
class Do(ControlFrame):
    """Script marker for `Gate`: call `fn` (awaiting it if it is a coroutine function)."""

    fn: Callable[[], Any] = field(default=lambda: None)


class Gate(FrameProcessor):
    """Sits before the service under test and turns run_test's eager frame list into a
    script: `Await` and `Observe` hold the script, `Send` injects a (system) frame at its
    place in the script, `Do` calls a function (e.g. a peer's) there.

    The markers are control frames, so they keep their order with the data and control
    frames around them (run_test's EndFrame included), while system frames outside a
    `Send` go straight through. A wait that expires is recorded in `failures` and the run
    goes on, so the test fails with the reason instead of hanging.
    """

    def __init__(self):
        super().__init__()
        self.failures: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, Await):
            if not await poll(frame.until, frame.timeout, 0.01):
                self.failures.append(f"no {frame.what} within {frame.timeout:.0f}s")
        elif isinstance(frame, Observe):
            await poll(frame.stop_early, frame.secs, 0.01)
        elif isinstance(frame, Send):
            await self.push_frame(frame.frame, direction)
        elif isinstance(frame, Do):
            result = frame.fn()
            if inspect.isawaitable(result):
                await result
        else:
            await self.push_frame(frame, direction)

    def check(self) -> None:
        assert not self.failures, f"gave up waiting: {self.failures}"


class Recorder(BaseObserver):
    """Every frame the watched processors push, in order, with its direction."""

    def __init__(self, *sources: FrameProcessor):
        super().__init__()
        self.sources = sources
        self.pushed: list[tuple[Frame, FrameDirection, float]] = []

    async def on_push_frame(self, data: FramePushed):
        if data.source in self.sources:
            self.pushed.append((data.frame, data.direction, time.monotonic()))

    def frames(self, kind: type | tuple[type, ...]) -> list:
        return [f for f, _, _ in self.pushed if isinstance(f, kind)]

    def errors(self) -> list[ErrorFrame]:
        return self.frames(ErrorFrame)

    def error_text(self) -> str:
        return " | ".join(e.error for e in self.errors())

    def has(self, kind, pred: Callable[[Any], bool] = lambda f: True) -> Callable[[], bool]:
        return lambda: any(pred(f) for f in self.frames(kind))


async def drive(
    service: FrameProcessor,
    frames: list[Frame],
    rec: Recorder | None = None,
    *,
    extra: tuple[FrameProcessor, ...] = (),
    start_timeout: float = 30.0,
    **kwargs,
):
    """run_test over Gate → service (→ extra processors); returns (down, up).

    `rec` (a Recorder of the service) lets `Await` markers wait on what came out.
    """
    gate = Gate()
    observers = [rec] if rec else []
    down, up = await asyncio.wait_for(
        run_test(
            Pipeline([gate, service, *extra]),
            frames_to_send=frames,
            observers=observers,
            start_timeout=start_timeout,
            **kwargs,
        ),
        timeout=start_timeout + 90,
    )
    gate.check()
    return down, up


# --------------------------------------------------------------------------------------
# Peers as fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture
async def deepgram():
    async with DeepgramPeer(api_key=DG_KEY) as peer:
        yield peer


@pytest.fixture
async def groq():
    async with GroqPeer(api_key=GROQ_KEY) as peer:
        yield peer


@pytest.fixture
async def cartesia():
    async with CartesiaPeer(api_key=CARTESIA_KEY) as peer:
        yield peer


# --------------------------------------------------------------------------------------
# What the tests say and expect
# --------------------------------------------------------------------------------------

UTTERANCE = "What is the capital of France?"  # what the user says (Deepgram's transcript)
ANSWER = "The capital of France is Paris."  # what Groq replies
SPOKEN = "Hello there. How are you today?"  # what Cartesia speaks


def transcribed(rec: Recorder, text: str = UTTERANCE) -> Callable[[], bool]:
    """The final transcripts so far add up to `text` (Deepgram may send several)."""
    return lambda: " ".join(f.text for f in rec.frames(TranscriptionFrame)) == text


def speech(secs: float = 1.2) -> list[InputAudioRawFrame]:
    """Loud audio, then enough silence for the peer's 300 ms endpointing."""
    return mic_frames(silence(0.2), tone(secs), silence(0.5))


def user_context(text: str = UTTERANCE, tools=None):
    from pipecat.processors.aggregators.llm_context import LLMContext

    messages = [{"role": "user", "content": text}]
    return LLMContext(messages=messages, tools=tools) if tools else LLMContext(messages=messages)


def llm_done(rec: Recorder, n: int = 1) -> Callable[[], bool]:
    return lambda: len(rec.frames(LLMFullResponseEndFrame)) >= n


def tts_done(rec: Recorder) -> Callable[[], bool]:
    return rec.has(TTSStoppedFrame)
