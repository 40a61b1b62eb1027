"""Contract tests: our cloud wiring (bot.providers) against loopback protocol peers.

The machine has no route to Deepgram, Groq, Cartesia, Tavily or Daily, so each provider is
replaced by a small server in `tests/peers/` that speaks its documented wire protocol.
Every Pipecat service here is built by OUR factory (`create_stt/create_llm/create_tts`)
from a `Settings` whose keys are dummies and whose base URLs point at the peers.

Services are driven with `pipecat.tests.utils.run_test`. Its frames are pushed at once,
so a `Gate` placed before the service holds `Await` markers until a condition holds (a
frame came out, the peer saw a message...) — nothing here sleeps and hopes. Every wait is
bounded and fails with the condition it was waiting for.

Fault tests inject the failures the providers' docs describe and check what OUR services
(`bot/cloud_services.py`) make of them, with the fallback off; tests/test_fallback.py
checks the whole turn with it. Nothing here tests a peer by itself or pins a Pipecat bug.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
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
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import run_test
from pipecat.utils.errors import ErrorCategory
from pydantic import SecretStr

from bot.config import Settings, Stage
from bot.providers import ProviderNames, create_llm, create_stt, create_tts
from processors.fallback import ConnectTimeout, ContextFreeError
from tests.peers.cartesia import CartesiaPeer
from tests.peers.deepgram import DeepgramPeer
from tests.peers.faults import Fault
from tests.peers.groq import GroqPeer
from tests.support.audio import rms
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
        # These tests pin down the bare cloud wiring; tests/test_fallback.py covers the
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
# Provider selection
# --------------------------------------------------------------------------------------


class StubModels:
    """LocalModels' interface, loading nothing: records which model a factory asked for."""

    def __init__(self):
        self.touched: list[str] = []

    @property
    def whisper(self):
        self.touched.append("whisper")
        return object()

    @property
    def piper(self):
        self.touched.append("piper")
        return object()

    @property
    def llm_server(self):
        from types import SimpleNamespace

        self.touched.append("llm_server")
        return SimpleNamespace(base_url="http://127.0.0.1:9/v1", model_name="stub-local-model")


def test_no_keys_selects_the_local_services():
    from bot.local.eager_whisper import EagerWhisperSTTService
    from bot.local.services import SharedPiperTTSService
    from bot.providers import LocalLLMService

    settings = Settings(
        _env_file=None,
        stt_provider="auto",
        llm_provider="auto",
        tts_provider="auto",
        deepgram_api_key=None,
        groq_api_key=None,
        cartesia_api_key=None,
        tavily_api_key=None,
    )
    assert ProviderNames.from_settings(settings) == ProviderNames("whisper", "llama.cpp", "piper")
    assert not any(settings.uses_cloud(stage) for stage in Stage)
    models = StubModels()
    stt, llm, tts = (f(settings, models) for f in (create_stt, create_llm, create_tts))
    assert type(stt) is EagerWhisperSTTService  # whisper_eager is on by default
    assert type(llm) is LocalLLMService
    assert type(tts) is SharedPiperTTSService
    assert models.touched == ["whisper", "llm_server", "piper"]


def test_keys_and_loopback_urls_select_the_cloud_services():
    from bot.cloud_services import CartesiaTTS, DeepgramSTT, GroqLLM

    settings = Settings(
        _env_file=None,
        deepgram_api_key=DG_KEY,
        groq_api_key=GROQ_KEY,
        cartesia_api_key=CARTESIA_KEY,
        deepgram_base_url="ws://127.0.0.1:1111",
        groq_base_url="http://127.0.0.1:2222/openai/v1",
        cartesia_base_url="ws://127.0.0.1:3333/",
        fallback_enabled=False,  # the bare wiring (tests/test_fallback.py: with fallback)
    )
    assert ProviderNames.from_settings(settings) == ProviderNames("deepgram", "groq", "cartesia")
    models = NoLocalModels()  # cloud services must not load any local model
    stt, llm, tts = (f(settings, models) for f in (create_stt, create_llm, create_tts))
    assert type(stt) is DeepgramSTT
    assert type(llm) is GroqLLM
    assert type(tts) is CartesiaTTS
    # The base URLs reach the clients, insecure schemes kept for loopback.
    assert stt._client._client_wrapper.get_environment().production == "ws://127.0.0.1:1111"
    assert str(llm._client.base_url) == "http://127.0.0.1:2222/openai/v1/"
    assert tts._url == "ws://127.0.0.1:3333/tts/websocket"


def test_speech_on_cartesia_runs_without_piper_installed():
    """The README's promise: piper-tts (GPL-3.0) can be left out of a bundle that speaks
    through Cartesia. The server and pipeline modules load and the TTS is built with any
    import of `piper` failing, as it would where the package is not installed."""
    script = """
import sys
sys.modules["piper"] = None  # `import piper` raises ImportError
import web.app, bot.pipeline
from bot.config import Settings
from bot.providers import create_tts
settings = Settings(_env_file=None, tts_provider="cloud", cartesia_api_key="k",
                    fallback_enabled=False)
print(type(create_tts(settings, None)).__name__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("CartesiaTTS"), done.stdout


def test_forcing_cloud_without_a_key_is_a_configuration_error():
    settings = Settings(_env_file=None, stt_provider="cloud", deepgram_api_key=None)
    with pytest.raises(ValueError, match="STT_PROVIDER=cloud needs its API key"):
        create_stt(settings, NoLocalModels())


# --------------------------------------------------------------------------------------
# Deepgram: live STT
# --------------------------------------------------------------------------------------

UTTERANCE = "What is the capital of France?"



def transcribed(rec: Recorder, text: str = UTTERANCE) -> Callable[[], bool]:
    """The final transcripts so far add up to `text` (Deepgram may send several)."""
    return lambda: " ".join(f.text for f in rec.frames(TranscriptionFrame)) == text


def speech(secs: float = 1.2) -> list[InputAudioRawFrame]:
    """Loud audio, then enough silence for the peer's 300 ms endpointing."""
    return mic_frames(silence(0.2), tone(secs), silence(0.5))


async def test_deepgram_streams_interim_then_final_transcripts(deepgram):
    deepgram.script(UTTERANCE)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    audio = speech()
    await drive(stt, [*audio, Await(transcribed(rec), "the whole transcript")], rec)

    interims = [f.text for f in rec.frames(InterimTranscriptionFrame)]
    finals = [f.text for f in rec.frames(TranscriptionFrame)]
    assert " ".join(finals) == UTTERANCE
    assert len(interims) >= 2, interims
    assert all(t in UTTERANCE for t in interims), interims
    # Interims come before the final that covers them.
    kinds = [type(f) for f in rec.frames((InterimTranscriptionFrame, TranscriptionFrame))]
    assert kinds[0] is InterimTranscriptionFrame and kinds[-1] is TranscriptionFrame
    assert not rec.errors(), rec.error_text()

    # What went over the wire, as the SDK built it from our settings.
    (conn,) = deepgram.connections
    assert conn.headers["Authorization"] == f"Token {DG_KEY}"
    q = conn.query
    assert (q["model"], q["encoding"], q["sample_rate"], q["channels"]) == (
        "nova-3", "linear16", str(IN_RATE), "1",
    )
    assert (q["interim_results"], q["smart_format"]) == ("true", "true")
    assert conn.audio_bytes == sum(len(f.audio) for f in audio)
    assert conn.results(final=True)[-1]["speech_final"] is True
    # Ending the pipeline closes the stream the documented way.
    assert conn.control_types()[-1] == "CloseStream"
    assert conn.closed_by == "CloseStream"


async def test_deepgram_finalize_on_vad_stop_confirms_the_transcript(deepgram):
    """VAD stop → Finalize → the peer's `from_finalize` final → a finalized transcript."""
    deepgram.script("Tell me a joke")
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    # Speech with no trailing silence: only the Finalize can close the utterance.
    frames = [
        *mic_frames(silence(0.2), tone(0.8)),
        Await(lambda: deepgram.connections and deepgram.connections[0].audio_bytes >= 32000,
              "all audio at the peer"),
        Send(VADUserStoppedSpeakingFrame(stop_secs=0.2)),
        Await(rec.has(TranscriptionFrame), "TranscriptionFrame"),
    ]
    await drive(stt, frames, rec)

    (conn,) = deepgram.connections
    assert "Finalize" in conn.control_types()
    (final,) = rec.frames(TranscriptionFrame)
    assert final.text == "Tell me a joke"
    assert final.finalized is True
    assert conn.results(final=True)[0]["from_finalize"] is True


# --------------------------------------------------------------------------------------
# Groq: chat completions
# --------------------------------------------------------------------------------------

ANSWER = "The capital of France is Paris."


def user_context(text: str = UTTERANCE, tools=None):
    from pipecat.processors.aggregators.llm_context import LLMContext

    messages = [{"role": "user", "content": text}]
    return LLMContext(messages=messages, tools=tools) if tools else LLMContext(messages=messages)


def llm_done(rec: Recorder, n: int = 1) -> Callable[[], bool]:
    return lambda: len(rec.frames(LLMFullResponseEndFrame)) >= n


async def test_groq_streams_the_reply_token_by_token(groq):
    groq.reply_text(ANSWER, token_delay=0.01)
    settings = cloud_settings(groq=groq)
    llm = create_llm(settings, NoLocalModels())
    rec = Recorder(llm)
    await drive(llm, [LLMContextFrame(user_context()), Await(llm_done(rec), "LLM response end")],
                rec)

    texts = [f.text for f in rec.frames(LLMTextFrame)]
    assert "".join(texts) == ANSWER
    assert len(texts) == len(ANSWER.split())  # streamed, not in one piece
    kinds = [type(f) for f, d, _ in rec.pushed if d is FrameDirection.DOWNSTREAM and
             isinstance(f, (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame))]
    assert kinds[0] is LLMFullResponseStartFrame and kinds[-1] is LLMFullResponseEndFrame
    assert not rec.errors(), rec.error_text()

    (request,) = [r for r in groq.requests if r.path == "/openai/v1/chat/completions"]
    assert request.headers["Authorization"] == f"Bearer {GROQ_KEY}"
    body = request.body
    assert body["model"] == settings.groq_model
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == settings.llm_temperature
    assert body["max_tokens"] == settings.llm_max_tokens
    assert body["messages"][0] == {"role": "system", "content": settings.system_prompt}
    assert body["messages"][-1] == {"role": "user", "content": UTTERANCE}


async def test_groq_tool_call_runs_the_handler_and_sends_the_result_back(groq):
    from pipecat.adapters.schemas.function_schema import FunctionSchema
    from pipecat.adapters.schemas.tools_schema import ToolsSchema
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair

    call = groq.reply_tool_call("get_weather", {"city": "Paris", "unit": "celsius"})
    groq.reply_text("It is 21 degrees in Paris.")
    llm = create_llm(cloud_settings(groq=groq), NoLocalModels())
    calls = []

    async def get_weather(params):
        calls.append(dict(params.arguments))
        await params.result_callback({"temperature": 21, "unit": "celsius"})

    llm.register_function("get_weather", get_weather)
    weather = FunctionSchema(
        name="get_weather",
        description="Current weather in a city",
        properties={"city": {"type": "string"}, "unit": {"type": "string"}},
        required=["city"],
    )
    context = user_context("What's the weather in Paris?", tools=ToolsSchema([weather]))
    _, assistant = LLMContextAggregatorPair(context)
    rec = Recorder(llm)
    await drive(
        llm,
        [LLMContextFrame(context), Await(llm_done(rec, 2), "the answer after the tool call")],
        rec,
        extra=(assistant,),
    )

    assert calls == [{"city": "Paris", "unit": "celsius"}]
    assert len(groq.completions) == 2
    first, second = groq.completions
    assert first["tools"][0]["function"]["name"] == "get_weather"
    # The second request carries the call and its result.
    assistant_msg = next(m for m in second["messages"] if m.get("tool_calls"))
    assert assistant_msg["tool_calls"][0]["id"] == call.id
    assert assistant_msg["tool_calls"][0]["function"]["name"] == "get_weather"
    tool_msg = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool_msg["tool_call_id"] == call.id
    assert json.loads(tool_msg["content"]) == {"temperature": 21, "unit": "celsius"}
    assert "".join(f.text for f in rec.frames(LLMTextFrame)) == "It is 21 degrees in Paris."
    assert not rec.errors(), rec.error_text()


# --------------------------------------------------------------------------------------
# Cartesia: TTS over a WebSocket
# --------------------------------------------------------------------------------------

SPOKEN = "Hello there. How are you today?"


def tts_done(rec: Recorder) -> Callable[[], bool]:
    return rec.has(TTSStoppedFrame)


async def test_cartesia_turns_text_into_non_silent_audio(cartesia):
    settings = cloud_settings(cartesia=cartesia)
    tts = create_tts(settings, NoLocalModels())
    rec = Recorder(tts)
    await drive(tts, [TTSSpeakFrame(SPOKEN), Await(tts_done(rec), "TTSStoppedFrame")], rec)

    audio = [f for f in rec.frames(TTSAudioRawFrame) if f.audio.strip(b"\x00")]
    assert audio, "no audio came out"
    assert all(f.sample_rate == OUT_RATE for f in audio)
    pcm = b"".join(f.audio for f in audio)
    assert rms(pcm) > 1000  # a real signal, not silence
    seconds = len(pcm) / 2 / OUT_RATE
    assert seconds == pytest.approx(cartesia.secs_per_char * len(SPOKEN.replace(" ", "")) +
                                    cartesia.secs_per_char * SPOKEN.count(" "), rel=0.25)
    assert rec.frames(TTSStartedFrame)
    # Word timestamps became the spoken words.
    assert " ".join(f.text for f in rec.frames(TTSTextFrame)) == SPOKEN
    assert not rec.errors(), rec.error_text()

    (conn,) = cartesia.connections
    assert conn["headers"]["X-API-Key"] == CARTESIA_KEY
    assert conn["headers"]["Cartesia-Version"] == "2026-03-01"
    (ctx,) = cartesia.contexts.values()
    assert ctx.text.strip() == SPOKEN
    assert ctx.continues[-1] is False and all(ctx.continues[:-1])  # flushed with continue=false
    assert ctx.model_id == settings.cartesia_model
    assert ctx.voice == {"mode": "id", "id": settings.cartesia_voice}
    assert ctx.output_format == {
        "container": "raw", "encoding": "pcm_s16le", "sample_rate": OUT_RATE
    }
    assert ctx.add_timestamps and ctx.done and not cartesia.cancels


async def test_cartesia_interruption_cancels_the_context_mid_stream():
    async with CartesiaPeer(api_key=CARTESIA_KEY, hold_after_chunks=2) as cartesia:
        tts = create_tts(cloud_settings(cartesia=cartesia), NoLocalModels())
        rec = Recorder(tts)

        def ctx():
            return next(iter(cartesia.contexts.values()), None)

        frames = [
            TTSSpeakFrame("This is a long answer that the user is about to interrupt."),
            Await(rec.has(TTSAudioRawFrame, lambda f: bool(f.audio.strip(b"\x00"))),
                  "the first audio"),
            Await(lambda: ctx() and ctx().chunks_sent == 2, "the peer holding mid-stream"),
            Send(InterruptionFrame()),
            Await(lambda: cartesia.cancels, "a cancel at the peer"),
        ]
        await drive(tts, frames, rec)
        chunks_at_cancel = ctx().chunks_sent
        cartesia.release_holds()

    assert cartesia.cancels == [ctx().context_id]
    assert ctx().cancelled and not ctx().done
    assert chunks_at_cancel == 2
    assert not rec.errors(), rec.error_text()


# --------------------------------------------------------------------------------------
# Faults providers really produce, and what our services (bot/cloud_services.py) do
# --------------------------------------------------------------------------------------
#
# The whole-turn handling (a local counterpart redoes the turn) is tests/test_fallback.py;
# here each service alone, with the fallback off.


def errors_matching(rec: Recorder, text: str) -> list[ErrorFrame]:
    return [e for e in rec.errors() if text in e.error]


async def test_deepgram_rejects_a_bad_key_for_good_without_leaking_it(deepgram):
    stt = create_stt(cloud_settings(deepgram=deepgram, dg_key="not-the-key"), NoLocalModels())
    rec = Recorder(stt)
    await drive(stt, [*speech(), Await(rec.has(ErrorFrame), "ErrorFrame")], rec)

    (error,) = rec.errors()
    assert "Deepgram rejected the connection (status 401)" in error.error
    assert "not-the-key" not in error.error and DG_KEY not in error.error
    assert not stt.is_usable  # a bad key stays bad: no retry
    assert len(deepgram.connections) == 1


async def test_deepgram_concurrency_429_is_retried_with_backoff_not_given_up(deepgram):
    """Deepgram's concurrency limit at the handshake: a busy moment. Pipecat 1.14 treats
    every 4xx as permanent (the service off for the session); ours retries."""
    deepgram.script(UTTERANCE)
    deepgram.faults.inject(Fault.HTTP_429, times=1)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    frames = [
        Await(lambda: len(deepgram.connections) == 2 and stt.connected, "the retry"),
        *[Send(f) for f in speech()],  # audio is a system frame: held only inside a Send
        Await(transcribed(rec), "the whole transcript"),
    ]
    await drive(stt, frames, rec)

    (error,) = rec.errors()
    assert "concurrency limit (429)" in error.error
    assert error.category is ErrorCategory.RATE_LIMIT
    assert stt.is_usable
    assert " ".join(f.text for f in rec.frames(TranscriptionFrame)) == UTTERANCE


async def test_deepgram_unanswered_handshake_does_not_hold_the_pipeline_start(deepgram):
    """Unbounded, the SDK waits 10 s per attempt, past the worker's setup timeout: the
    session would never start. Ours starts after CLOUD_CONNECT_TIMEOUT_SECS and says why."""
    deepgram.faults.inject(Fault.HANG, stage="handshake", times=1)
    settings = cloud_settings(deepgram=deepgram, cloud_connect_timeout_secs=1.0)
    stt = create_stt(settings, NoLocalModels())
    rec = Recorder(stt)
    # run_test fails unless the pipeline has started within start_timeout.
    await drive(stt, [Await(rec.has(ErrorFrame), "ErrorFrame")], rec, start_timeout=4.0)

    (error,) = rec.errors()
    assert isinstance(error.exception, ConnectTimeout), error
    assert stt.is_usable


async def test_deepgram_slow_handshake_only_delays(deepgram):
    deepgram.script(UTTERANCE)
    deepgram.faults.inject(Fault.SLOW_FIRST_BYTE, seconds=1.0, stage="handshake")
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    await drive(stt, [*speech(), Await(transcribed(rec), "the whole transcript")], rec)
    assert " ".join(f.text for f in rec.frames(TranscriptionFrame)) == UTTERANCE
    assert not rec.errors(), rec.error_text()


@pytest.mark.parametrize("fault", [Fault.HTTP_500, Fault.HTTP_429])
async def test_groq_failed_request_fails_the_turn_at_once(groq, fault):
    """No SDK retries: a 429 says `Retry-After: 7` and the OpenAI SDK would sleep through
    it (twice) while the caller waits. One request, one error, the turn closed."""
    groq.faults.inject(fault)
    llm = create_llm(cloud_settings(groq=groq), NoLocalModels())
    rec = Recorder(llm)
    await drive(llm, [LLMContextFrame(user_context()), Await(llm_done(rec), "LLM response end")],
                rec)

    (error,) = rec.errors()
    assert f"Error code: {fault.value[-3:]}" in error.error
    assert len(groq.completions) == 1
    assert not rec.frames(LLMTextFrame)
    assert rec.frames(LLMFullResponseStartFrame) and rec.frames(LLMFullResponseEndFrame)


async def test_groq_mid_stream_tool_use_failed_is_an_error_of_the_turn(groq):
    """HTTP 200, a few words, then `data: {"error": {"code": "tool_use_failed"}}`."""
    groq.reply_midstream_error(after_text="Let me")
    llm = create_llm(cloud_settings(groq=groq), NoLocalModels())
    rec = Recorder(llm)
    await drive(llm, [LLMContextFrame(user_context()), Await(llm_done(rec), "LLM response end")],
                rec)

    (error,) = rec.errors()
    assert "Failed to call a function" in error.error
    assert "".join(f.text for f in rec.frames(LLMTextFrame)) == "Let me"


async def test_groq_decommissioned_model_is_reported_at_start_up(groq):
    from bot.model_check import model_problems

    ok = cloud_settings(groq=groq, stt_provider="local", tts_provider="local")
    assert await model_problems(ok) == []
    old = ok.model_copy(update={"groq_model": "llama-3.3-70b-versatile"})
    (problem,) = await model_problems(old)
    assert "GROQ_MODEL='llama-3.3-70b-versatile'" in problem and "openai/gpt-oss-120b" in problem
    # ...and it is what a turn would have met: every request refused.
    llm = create_llm(old, NoLocalModels())
    rec = Recorder(llm)
    await drive(llm, [LLMContextFrame(user_context()), Await(llm_done(rec), "LLM response end")],
                rec)
    assert "has been decommissioned" in rec.error_text()


async def test_the_server_says_once_at_start_up_when_a_model_is_not_offered(groq):
    from loguru import logger

    from bot.local.models import LocalModels
    from web.app import create_app

    settings = cloud_settings(
        groq=groq, stt_provider="local", tts_provider="local", groq_model="llama-3.3-70b-versatile"
    )
    app = create_app(settings, LocalModels(settings))
    said: list[str] = []
    sink = logger.add(lambda m: said.append(m.record["message"]), level="WARNING")
    try:
        async with app.router.lifespan_context(app):
            await app.state.model_check
    finally:
        logger.remove(sink)
    checks = [m for m in said if m.startswith("Model check:")]
    assert len(checks) == 1 and "GROQ_MODEL='llama-3.3-70b-versatile'" in checks[0], said
    assert [r.path for r in groq.requests] == ["/openai/v1/models"]


async def test_deepgram_and_cartesia_models_are_checked_at_start_up(deepgram, cartesia):
    from bot.model_check import model_problems

    settings = cloud_settings(deepgram=deepgram, cartesia=cartesia, llm_provider="local")
    assert await model_problems(settings) == []  # the defaults exist
    wrong = settings.model_copy(update={"deepgram_model": "nova-9", "cartesia_model": "sonic-0"})
    problems = await model_problems(wrong)
    assert [p.split(" ")[0] for p in problems] == ["Deepgram", "Cartesia"], problems
    assert "DEEPGRAM_MODEL='nova-9'" in problems[0] and "CARTESIA_MODEL='sonic-0'" in problems[1]
    bad_key = settings.model_copy(update={"cartesia_api_key": SecretStr("wrong")})
    assert await model_problems(bad_key) == ["Cartesia: could not check CARTESIA_MODEL (HTTP 401)"]


async def test_cartesia_error_without_context_keeps_every_context():
    """API 2026-03-01 sends `context_id` only when available. Pipecat reads
    `msg["context_id"]`: KeyError, a reconnect, and every context in flight lost."""
    async with CartesiaPeer(api_key=CARTESIA_KEY, hold_after_chunks=2) as cartesia:
        tts = create_tts(cloud_settings(cartesia=cartesia), NoLocalModels())
        rec = Recorder(tts)
        contexts = lambda: list(cartesia.contexts.values())
        frames = [
            TTSSpeakFrame(SPOKEN),
            TTSSpeakFrame("And a second sentence."),
            Await(lambda: len(contexts()) == 2 and all(c.chunks_sent == 2 for c in contexts()),
                  "both contexts mid-stream"),
            Do(cartesia.error_without_context),
            Await(rec.has(ErrorFrame), "the error reported"),
            Do(cartesia.release_holds),
            Await(lambda: len(rec.frames(TTSStoppedFrame)) >= 2, "both contexts finished"),
        ]
        await drive(tts, frames, rec)

    (error,) = rec.errors()
    assert isinstance(error.exception, ContextFreeError) and "invalid_request" in error.error
    assert len(cartesia.connections) == 1  # no reconnect
    assert all(c.done and c.chunks_sent > 2 for c in contexts())
    spoken = [f for f in rec.frames(TTSAudioRawFrame) if f.audio.strip(b"\x00")]
    assert sum(len(f.audio) for f in spoken) == sum(c.audio_bytes_sent for c in contexts())


async def test_cartesia_sentence_after_the_context_expired_opens_a_new_one(cartesia):
    """A slow LLM: the next sentence comes more than 1 s after the context's last audio,
    when Cartesia has expired it and refuses more input on it."""
    tts = create_tts(cloud_settings(cartesia=cartesia), NoLocalModels())
    rec = Recorder(tts)

    def first():
        return next(iter(cartesia.contexts.values()), None)

    frames = [
        LLMFullResponseStartFrame(),
        # The aggregator sends a sentence once the next one has begun ("The").
        LLMTextFrame("The first sentence is here. The"),
        Await(lambda: first() and first().expired, "the first context to expire"),
        LLMTextFrame(" second one came late."),
        LLMFullResponseEndFrame(),
        Await(lambda: len(cartesia.contexts) == 2 and list(cartesia.contexts.values())[1].done,
              "the second sentence spoken"),
        Await(rec.has(TTSStoppedFrame), "the answer's end"),
    ]
    await drive(tts, frames, rec)

    a, b = cartesia.contexts.values()
    assert a.text.strip() == "The first sentence is here." and not a.rejected
    assert b.text.strip() == "The second one came late."
    assert not rec.errors(), rec.error_text()
    # Both under the one context Pipecat knows, audio and words.
    assert {f.context_id for f in rec.frames(TTSAudioRawFrame)} == {a.context_id}
    words = " ".join(f.text for f in rec.frames(TTSTextFrame))
    assert words == "The first sentence is here. The second one came late."


# --------------------------------------------------------------------------------------
# A whole conversation on the cloud stack (VAD, smart turn and denoise stay local)
# --------------------------------------------------------------------------------------


class ByServiceType(BaseObserver):
    """Frames the cloud services pushed (first push), for a pipeline built by run_bot."""

    def __init__(self):
        super().__init__()
        self.pushed: list[tuple[str, Frame]] = []

    async def on_push_frame(self, data: FramePushed):
        kind = type(data.source).__name__
        services = ("DeepgramSTT", "GroqLLM", "CartesiaTTS")
        if data.first_push and kind in services:
            self.pushed.append((kind, data.frame))

    def texts(self, service: str, frame_type: type) -> list[str]:
        return [f.text for k, f in self.pushed if k == service and type(f) is frame_type]


@dataclass
class CloudConversation:
    result: Any
    spy: ByServiceType
    deepgram: DeepgramPeer
    groq: GroqPeer
    cartesia: CartesiaPeer
    question: np.ndarray
    models: Any


@pytest.fixture(scope="module")
async def cloud_conversation():
    """One real conversation through run_bot with STT, LLM and TTS on their peers.

    The question is real speech (the local Piper voice, the only local model loaded for
    it); VAD, smart turn and denoise are the real local ones.
    """
    from bot.conversation import converse
    from bot.local.models import LocalModels
    from bot.pipeline import Session
    from transports.file import FileTransportParams, Utterance

    async with (
        DeepgramPeer(api_key=DG_KEY) as dg,
        GroqPeer(api_key=GROQ_KEY, token_delay=0.01) as groq,
        CartesiaPeer(api_key=CARTESIA_KEY) as cartesia,
    ):
        dg.script(UTTERANCE)
        groq.reply_text(ANSWER)
        settings = cloud_settings(deepgram=dg, groq=groq, cartesia=cartesia)
        names = ProviderNames.from_settings(settings)
        assert names == ProviderNames("deepgram", "groq", "cartesia")
        models = LocalModels(settings)
        question = models.synthesize(UTTERANCE, sample_rate=settings.input_sample_rate)
        spy = ByServiceType()
        session = Session(settings=settings, models=models, observers=[spy])
        result = await asyncio.wait_for(
            converse([Utterance(question)], session, FileTransportParams(fast=True)),
            timeout=120,
        )
        yield CloudConversation(result, spy, dg, groq, cartesia, question, models)


@pytest.mark.slow
async def test_whole_conversation_on_the_cloud_stack(cloud_conversation):
    c = cloud_conversation
    (record,) = c.result.turn_dicts()
    assert record["user_text"] == UTTERANCE
    assert not record["interrupted"]

    # Each stage went to its peer: the transcript became the LLM's question, the LLM's
    # answer became Cartesia's text, Cartesia's words and audio came out.
    (conn,) = c.deepgram.connections
    assert conn.audio_bytes >= len(c.question) * 2 and conn.results(final=True)
    assert " ".join(c.spy.texts("DeepgramSTT", TranscriptionFrame)) == UTTERANCE
    assert c.groq.completions[0]["messages"][-1] == {"role": "user", "content": UTTERANCE}
    assert "".join(c.spy.texts("GroqLLM", LLMTextFrame)) == ANSWER
    assert [ctx.text.strip() for ctx in c.cartesia.contexts.values()] == [ANSWER]
    assert " ".join(c.spy.texts("CartesiaTTS", TTSTextFrame)) == ANSWER

    # The bot's audio is Cartesia's (peer) tone, played out: not silence.
    bot_audio = bytes(c.result.transport.bot_audio)
    assert len(bot_audio) / 2 / OUT_RATE >= c.cartesia.secs_per_char * len(ANSWER) * 0.8
    assert rms(bot_audio) > 1000
    # No local model but the question's voice was loaded.
    assert c.models._whisper is None and c.models._llm is None


@pytest.mark.slow
async def test_whole_conversation_turn_record_has_the_bot_text(cloud_conversation):
    (record,) = cloud_conversation.result.turn_dicts()
    assert record["bot_text"] == ANSWER
    assert {"llm_ttft", "tts_ttfb", "voice_to_voice"} <= set(record["stages_ms"]), record
