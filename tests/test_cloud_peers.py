"""Contract tests: our cloud wiring (bot.providers) against loopback protocol peers.

The machine has no route to Deepgram, Groq, Cartesia, Tavily or Daily, so each provider is
replaced by a small server in `tests/peers/` that speaks its documented wire protocol.
Every Pipecat service here is built by OUR factory (`create_stt/create_llm/create_tts`)
from a `Settings` whose keys are dummies and whose base URLs point at the peers.

Services are driven with `pipecat.tests.utils.run_test`. Its frames are pushed at once,
so a `Gate` placed before the service holds `Await` markers until a condition holds (a
frame came out, the peer saw a message...) — nothing here sleeps and hopes. Every wait is
bounded and fails with the condition it was waiting for.

Fault tests pin down what Pipecat 1.14 does today when a provider misbehaves (see the
module-level FINDINGS below); they are the baseline for the local fallback to come.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pytest
import websockets
from pipecat.frames.frames import (
    CancelFrame,
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

from bot.config import Settings, Stage
from bot.providers import ProviderNames, create_llm, create_stt, create_tts
from tests.peers.cartesia import CartesiaPeer
from tests.peers.daily import DailyPeer
from tests.peers.deepgram import DeepgramPeer
from tests.peers.faults import Fault
from tests.peers.groq import GroqPeer

DG_KEY = "dg-loopback-key"
GROQ_KEY = "gsk-loopback-key"
CARTESIA_KEY = "sk-cartesia-loopback-key"
DAILY_KEY = "daily-loopback-key"

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


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


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
class CancelRun(ControlFrame):
    """Script marker for `Gate`: cancel the pipeline (for a service stuck on a provider)."""


class Gate(FrameProcessor):
    """Sits before the service under test and turns run_test's eager frame list into a
    script: `Await` and `Observe` hold the script, `Send` injects a (system) frame at its
    place in the script, `CancelRun` cancels the worker.

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
            if not await until(frame.until, frame.timeout):
                self.failures.append(f"no {frame.what} within {frame.timeout:.0f}s")
        elif isinstance(frame, Observe):
            await until(frame.stop_early, frame.secs)
        elif isinstance(frame, Send):
            await self.push_frame(frame.frame, direction)
        elif isinstance(frame, CancelRun):
            # Straight downstream: the worker's own queue is busy waiting for the EndFrame
            # run_test queued, so a CancelWorkerFrame would wait behind it forever.
            await self.push_frame(CancelFrame(reason="test cancels"))
        else:
            await self.push_frame(frame, direction)

    def check(self) -> None:
        assert not self.failures, f"gave up waiting: {self.failures}"


async def until(predicate: Callable[[], Any], timeout: float) -> bool:
    """Poll `predicate` (every 10 ms) until true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


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


@pytest.fixture
async def daily():
    async with DailyPeer(api_key=DAILY_KEY) as peer:
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
    from pipecat.services.openai.llm import OpenAILLMService

    from bot.eager_whisper import EagerWhisperSTTService
    from bot.local_services import SharedPiperTTSService

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
    assert type(llm) is OpenAILLMService
    assert type(tts) is SharedPiperTTSService
    assert models.touched == ["whisper", "llm_server", "piper"]


def test_keys_and_loopback_urls_select_the_cloud_services():
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.groq.llm import GroqLLMService

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
    assert type(stt) is DeepgramSTTService
    assert type(llm) is GroqLLMService
    assert type(tts) is CartesiaTTSService
    # The base URLs reach the clients, insecure schemes kept for loopback.
    assert stt._client._client_wrapper.get_environment().production == "ws://127.0.0.1:1111"
    assert str(llm._client.base_url) == "http://127.0.0.1:2222/openai/v1/"
    assert tts._url == "ws://127.0.0.1:3333/tts/websocket"


def test_forcing_cloud_without_a_key_is_a_configuration_error():
    settings = Settings(_env_file=None, stt_provider="cloud", deepgram_api_key=None)
    with pytest.raises(ValueError, match="STT_PROVIDER=cloud needs its API key"):
        create_stt(settings, NoLocalModels())


# --------------------------------------------------------------------------------------
# Deepgram: live STT
# --------------------------------------------------------------------------------------

UTTERANCE = "What is the capital of France?"



def speech(secs: float = 1.2) -> list[InputAudioRawFrame]:
    """Loud audio, then enough silence for the peer's 300 ms endpointing."""
    return mic_frames(silence(0.2), tone(secs), silence(0.5))


async def test_deepgram_streams_interim_then_final_transcripts(deepgram):
    deepgram.script(UTTERANCE)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    audio = speech()
    await drive(stt, [*audio, Await(rec.has(TranscriptionFrame), "TranscriptionFrame")], rec)

    interims = [f.text for f in rec.frames(InterimTranscriptionFrame)]
    finals = [f.text for f in rec.frames(TranscriptionFrame)]
    assert finals == [UTTERANCE]
    assert len(interims) >= 2, interims
    assert all(UTTERANCE.startswith(t) for t in interims), interims
    # Interims come before the final.
    kinds = [type(f) for f in rec.frames((InterimTranscriptionFrame, TranscriptionFrame))]
    assert kinds[-1] is TranscriptionFrame and TranscriptionFrame not in kinds[:-1]
    assert not rec.errors(), rec.error_text()

    # What went over the wire, as the SDK built it from our settings.
    (conn,) = deepgram.connections
    assert conn.headers["Authorization"] == f"Token {DG_KEY}"
    q = conn.query
    assert (q["model"], q["encoding"], q["sample_rate"], q["channels"]) == (
        "nova-3-general", "linear16", str(IN_RATE), "1",
    )
    assert (q["interim_results"], q["smart_format"]) == ("true", "true")
    assert conn.audio_bytes == sum(len(f.audio) for f in audio)
    final = conn.results(final=True)[0]
    assert final["speech_final"] is True
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


async def test_deepgram_peer_speaks_the_documented_protocol():
    """The peer itself, with a raw WebSocket client: the parts Pipecat does not exercise."""
    async with DeepgramPeer(["one two three"], api_key=DG_KEY, idle_timeout=1.0) as peer:
        url = f"{peer.ws_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
        auth = {"Authorization": f"Token {DG_KEY}"}
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers={"Authorization": "Token x"}):
                pass
        assert refused.value.response.status_code == 401

        async with websockets.connect(
            url + "&interim_results=true&utterance_end_ms=1000", additional_headers=auth
        ) as ws:
            await ws.send(json.dumps({"type": "KeepAlive"}))
            await ws.send(np.concatenate([tone(0.6), silence(1.5)]).tobytes())
            messages = []
            while not messages or messages[-1]["type"] != "UtteranceEnd":
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
            await ws.send("not json")
            error = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            await ws.send(json.dumps({"type": "CloseStream"}))
            metadata = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            with pytest.raises(websockets.exceptions.ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), WAIT)
        types = [m["type"] for m in messages]
        assert types[-2:] == ["Results", "UtteranceEnd"]
        interims = [m for m in messages if m["type"] == "Results" and not m["is_final"]]
        assert interims and all(m["speech_final"] is False for m in interims)
        final = messages[-2]
        assert (final["is_final"], final["speech_final"]) == (True, True)
        assert final["channel"]["alternatives"][0]["transcript"] == "one two three"
        assert messages[-1]["last_word_end"] <= 0.62
        assert (error["type"], error["variant"]) == ("Error", "SchemaError")
        assert metadata["type"] == "Metadata" and metadata["duration"] == pytest.approx(2.1)
        assert peer.connections[1].control_types() == ["KeepAlive", "<unparsable>", "CloseStream"]

        # No audio and no KeepAlive for `idle_timeout`: closed with NET-0001 (1011).
        async with websockets.connect(url, additional_headers=auth) as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd.code == 1011 and "NET-0001" in closed.value.rcvd.reason


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


async def test_groq_peer_serves_models_non_streaming_and_rejects_bad_keys(groq):
    from openai import AsyncOpenAI, AuthenticationError

    client = AsyncOpenAI(api_key=GROQ_KEY, base_url=f"{groq.base_url}/openai/v1", max_retries=0)
    models = await client.models.list()
    assert "llama-3.3-70b-versatile" in [m.id for m in models.data]

    groq.reply_text(ANSWER)
    completion = await client.chat.completions.create(
        model="llama-3.3-70b-versatile", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"

    call = groq.reply_tool_call("web_search", {"query": "news"})
    completion = await client.chat.completions.create(
        model="llama-3.3-70b-versatile", messages=[{"role": "user", "content": "news?"}]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].id == call.id
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"query": "news"}

    # The /v1 prefix is served too; a wrong key is a 401.
    bad = AsyncOpenAI(api_key="wrong", base_url=f"{groq.base_url}/v1", max_retries=0)
    with pytest.raises(AuthenticationError):
        await bad.models.list()
    await client.close()
    await bad.close()


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


async def test_cartesia_peer_speaks_the_documented_protocol():
    """The peer with a raw client: query-param auth, f32le, errors, timestamps, done."""
    async with CartesiaPeer(api_key=CARTESIA_KEY) as peer:
        base = f"{peer.ws_url}/tts/websocket"
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(f"{base}?api_key=wrong&cartesia_version=2026-03-01"):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(f"{base}?api_key={CARTESIA_KEY}"):
                pass
        assert refused.value.response.status_code == 400

        request = {
            "model_id": "sonic-2",
            "voice": {"mode": "id", "id": "v"},
            "output_format": {"container": "raw", "encoding": "pcm_f32le", "sample_rate": 8000},
            "add_timestamps": True,
        }
        async with websockets.connect(
            f"{base}?api_key={CARTESIA_KEY}&cartesia_version=2026-03-01"
        ) as ws:
            await ws.send(json.dumps({**request, "context_id": "a", "transcript": "Hi ",
                                      "continue": True}))
            await ws.send(json.dumps({**request, "context_id": "a", "transcript": "you.",
                                      "continue": False}))
            await ws.send(json.dumps({"context_id": "b", "transcript": "x"}))  # invalid
            messages = []
            while sum(m["type"] in ("done", "error") for m in messages) < 2:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
        by_type = {}
        for m in messages:
            by_type.setdefault(m["type"], []).append(m)
        (error,) = by_type["error"]
        assert (error["context_id"], error["status_code"], error["done"]) == ("b", 400, True)
        assert [w for t in by_type["timestamps"] for w in t["word_timestamps"]["words"]] == [
            "Hi", "you."
        ]
        second = by_type["timestamps"][1]["word_timestamps"]["start"][0]
        assert second == pytest.approx(0.2)  # cumulative within the context ("Hi" lasts 0.2 s)
        audio = b"".join(base64.b64decode(m["data"]) for m in by_type["chunk"])
        samples = np.frombuffer(audio, dtype=np.float32)
        assert len(samples) == int(0.2 * 8000) * 2 and np.abs(samples).max() > 0.3
        assert messages[-1]["type"] in ("done", "error") and by_type["done"][0]["context_id"] == "a"


# --------------------------------------------------------------------------------------
# Faults: what Pipecat 1.14 does when a provider misbehaves
# --------------------------------------------------------------------------------------
#
# FINDINGS (asserted below; the baseline for the local fallback to come):
#
# Deepgram (DeepgramSTTService, deepgram-sdk 7 over websockets' legacy client)
# - 401 or 429 at the handshake: one ErrorFrame at once, the service is marked unusable
#   (permanent), no retry; later audio is dropped.
# - 500 at the handshake: ErrorFrame per attempt, 3 attempts 4 s apart, then "connection
#   failed to stay up 3 times in a row" and unusable. Pipeline START is blocked meanwhile
#   (setup waits for the connection to settle): ~8 s. A single 500 costs a 4 s late start.
# - Handshake never answered: each attempt waits the 10 s websockets open timeout, and
#   setup blocks past PipelineWorker's 20 s setup timeout: the pipeline never starts.
# - Invalid JSON or a dropped connection mid-stream: ErrorFrame, reconnect after a 4 s
#   backoff; the utterance in flight is lost (no TranscriptionFrame for it).
# - A message of the wrong shape: silently skipped.
# - Accepted but never answering: no transcript and no error at all (only metrics notice).
#
# Groq (GroqLLMService = OpenAI SDK, max_retries=2, timeout 600 s)
# - 500 / 429: the SDK retries twice (0.5 s, 1 s backoff), then one ErrorFrame
#   "Error during completion: Error code: 5xx"; the response still gets its Start/End
#   frames. A single 429/500 is absorbed by the retry: the user just waits longer.
# - Dropped connection / invalid or wrong-shaped chunk mid-stream: the text so far is
#   kept (already pushed), then one ErrorFrame.
# - Slow first byte: just later. Hang: nothing at all — no error for the SDK's 600 s
#   read timeout (x3 attempts); only cancelling the pipeline ends it.
#
# Cartesia (CartesiaTTSService, WebsocketTTSService)
# - 429 / 500 at the handshake: ErrorFrame at start; each sentence retries the connect
#   (another ErrorFrame), then "Websocket not connected" and "TTS context ... completed
#   with no audio" ErrorFrames. No audio, nothing hangs.
# - Accepted but never answering, or first chunk later than 3 s: after 3 s the context
#   is given up with "TTS context ... completed with no audio"; audio arriving later is
#   dropped.
# - Dropped connection or invalid JSON mid-stream: NO ErrorFrame; Pipecat reconnects at
#   once; the rest of that sentence's audio is lost although its words still come out as
#   TTSTextFrames; the next sentence is spoken on the new connection.
# - A message of the wrong shape: silently skipped.


def errors_matching(rec: Recorder, text: str) -> list[ErrorFrame]:
    return [e for e in rec.errors() if text in e.error]


@pytest.mark.parametrize("rejection", ["bad_key", "rate_limited"])
async def test_deepgram_rejected_handshake_is_a_permanent_error(deepgram, rejection):
    deepgram.script(UTTERANCE)
    if rejection == "rate_limited":
        deepgram.faults.inject(Fault.HTTP_429)
    key = "not-the-key" if rejection == "bad_key" else DG_KEY
    stt = create_stt(cloud_settings(deepgram=deepgram, dg_key=key), NoLocalModels())
    rec = Recorder(stt)
    status = "401" if rejection == "bad_key" else "429"
    await drive(stt, [*speech(), Await(rec.has(ErrorFrame), "ErrorFrame")], rec)

    (error,) = rec.errors()
    assert f"Deepgram rejected the connection (status {status})" in error.error
    assert DG_KEY not in error.error  # the key is redacted
    assert not stt.is_usable  # given up for good: no retry
    assert len(deepgram.connections) == 1
    assert not rec.frames(TranscriptionFrame)


async def test_deepgram_server_error_is_retried_three_times_then_given_up(deepgram):
    deepgram.faults.inject(Fault.HTTP_500)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    frames = [*speech(), Await(rec.has(ErrorFrame, lambda e: "3 times in a row" in e.error),
                               "the give-up ErrorFrame", timeout=30)]
    await drive(stt, frames, rec)

    assert len(errors_matching(rec, "connection error")) == 3
    assert len(deepgram.connections) == 3
    assert not stt.is_usable
    assert not rec.frames(TranscriptionFrame)


async def test_deepgram_single_server_error_delays_the_start_then_works(deepgram):
    deepgram.script(UTTERANCE)
    deepgram.faults.inject(Fault.HTTP_500, times=1)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    await drive(stt, [*speech(), Await(rec.has(TranscriptionFrame), "TranscriptionFrame")], rec)

    assert len(errors_matching(rec, "connection error")) == 1
    assert [f.text for f in rec.frames(TranscriptionFrame)] == [UTTERANCE]
    assert [c.closed_by for c in deepgram.connections] == ["fault", "CloseStream"]
    assert stt.is_usable


@pytest.mark.parametrize(
    "fault, error_text",
    [
        ({"kind": Fault.MALFORMED, "after": 1}, "Unterminated string"),
        ({"kind": Fault.DISCONNECT, "after": 1}, "no close frame received or sent"),
    ],
    ids=["invalid_json", "dropped_connection"],
)
async def test_deepgram_broken_stream_reports_an_error_and_reconnects(deepgram, fault, error_text):
    deepgram.script(UTTERANCE)
    deepgram.faults.inject(**fault, times=1)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    frames = [
        *speech(),
        Await(rec.has(ErrorFrame), "ErrorFrame"),
        Await(lambda: len(deepgram.connections) == 2, "the reconnection", timeout=WAIT),
    ]
    await drive(stt, frames, rec)

    (error,) = rec.errors()
    assert error_text in error.error
    assert stt.is_usable
    # The utterance that was in flight is lost.
    assert not rec.frames(TranscriptionFrame)


async def test_deepgram_wrong_shaped_message_is_skipped(deepgram):
    deepgram.script(UTTERANCE)
    deepgram.faults.inject(Fault.MALFORMED, variant="schema", after=1)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    await drive(stt, [*speech(), Await(rec.has(TranscriptionFrame), "TranscriptionFrame")], rec)

    assert deepgram.faults.count(Fault.MALFORMED) == 1
    assert [f.text for f in rec.frames(TranscriptionFrame)] == [UTTERANCE]
    assert not rec.errors(), rec.error_text()


async def test_deepgram_that_never_answers_goes_unnoticed(deepgram):
    deepgram.script(UTTERANCE)
    deepgram.faults.inject(Fault.HANG)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    audio = speech()
    frames = [
        *audio,
        Await(lambda: deepgram.connections[0].audio_bytes == sum(len(f.audio) for f in audio),
              "all audio at the peer"),
        Send(VADUserStoppedSpeakingFrame(stop_secs=0.2)),
        Await(lambda: "Finalize" in deepgram.connections[0].control_types(), "Finalize"),
        # Longer than the STT TTFB timeout (2 s) that closes the STT measurement.
        Observe(3.0, stop_early=lambda: rec.frames((ErrorFrame, TranscriptionFrame))),
    ]
    await drive(stt, frames, rec)

    assert not rec.frames(TranscriptionFrame)
    assert not rec.errors()  # nothing tells the pipeline the provider is gone
    assert stt.is_usable


async def test_deepgram_handshake_never_answered_blocks_pipeline_setup(deepgram):
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.workers.runner import WorkerRunner

    deepgram.faults.inject(Fault.HANG, stage="handshake")
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    worker = PipelineWorker(Pipeline([stt]), setup_timeout_secs=2.0, cancel_on_idle_timeout=False)
    started, setup_timed_out = asyncio.Event(), asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    @worker.event_handler("on_setup_timeout")
    async def _timeout(worker):
        setup_timed_out.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(setup_timed_out.wait(), WAIT)
        assert not started.is_set()
        assert deepgram.faults.count(Fault.HANG) == 1
    finally:
        await runner.cancel()
        await asyncio.wait_for(run, WAIT)


async def test_deepgram_slow_handshake_only_delays(deepgram):
    deepgram.script(UTTERANCE)
    deepgram.faults.inject(Fault.SLOW_FIRST_BYTE, seconds=1.5, stage="handshake")
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    await drive(stt, [*speech(), Await(rec.has(TranscriptionFrame), "TranscriptionFrame")], rec)
    assert [f.text for f in rec.frames(TranscriptionFrame)] == [UTTERANCE]
    assert not rec.errors(), rec.error_text()


@pytest.mark.parametrize("fault, status", [(Fault.HTTP_500, 500), (Fault.HTTP_429, 429)])
async def test_groq_server_errors_are_retried_twice_then_reported(groq, fault, status):
    groq.faults.inject(fault)
    llm = create_llm(cloud_settings(groq=groq), NoLocalModels())
    rec = Recorder(llm)
    await drive(llm, [LLMContextFrame(user_context()), Await(llm_done(rec), "LLM response end")],
                rec)

    (error,) = rec.errors()
    assert f"Error during completion: Error code: {status}" in error.error
    assert len(groq.completions) == 3  # the OpenAI SDK's two retries
    assert not rec.frames(LLMTextFrame)
    assert rec.frames(LLMFullResponseStartFrame) and rec.frames(LLMFullResponseEndFrame)


async def test_groq_single_rate_limit_is_absorbed_by_the_retry(groq):
    groq.faults.inject(Fault.HTTP_429, times=1, retry_after=0)
    groq.reply_text(ANSWER)
    llm = create_llm(cloud_settings(groq=groq), NoLocalModels())
    rec = Recorder(llm)
    await drive(llm, [LLMContextFrame(user_context()), Await(llm_done(rec), "LLM response end")],
                rec)

    assert len(groq.completions) == 2
    assert "".join(f.text for f in rec.frames(LLMTextFrame)) == ANSWER
    assert not rec.errors(), rec.error_text()


@pytest.mark.parametrize(
    "fault, error_text",
    [
        ({"kind": Fault.DISCONNECT, "after": 3}, "Connection error"),
        ({"kind": Fault.MALFORMED, "after": 3}, "Error during completion"),
        ({"kind": Fault.MALFORMED, "after": 3, "variant": "schema"}, "Error during completion"),
    ],
    ids=["dropped_connection", "invalid_json", "wrong_shape"],
)
async def test_groq_broken_stream_keeps_the_partial_text_and_reports(groq, fault, error_text):
    groq.faults.inject(**fault)
    groq.reply_text(ANSWER)
    llm = create_llm(cloud_settings(groq=groq), NoLocalModels())
    rec = Recorder(llm)
    await drive(llm, [LLMContextFrame(user_context()), Await(llm_done(rec), "LLM response end")],
                rec)

    # Chunks 1 and 2 (after the role chunk) got through: "The capital".
    assert "".join(f.text for f in rec.frames(LLMTextFrame)) == "The capital"
    (error,) = rec.errors()
    assert error_text in error.error
    assert len(groq.completions) == 1  # a broken stream is not retried


async def test_groq_slow_first_byte_only_delays(groq):
    groq.faults.inject(Fault.SLOW_FIRST_BYTE, seconds=1.5)
    groq.reply_text(ANSWER)
    llm = create_llm(cloud_settings(groq=groq), NoLocalModels())
    rec = Recorder(llm)
    await drive(llm, [LLMContextFrame(user_context()), Await(llm_done(rec), "LLM response end")],
                rec)
    assert "".join(f.text for f in rec.frames(LLMTextFrame)) == ANSWER
    assert not rec.errors(), rec.error_text()


async def test_groq_that_never_answers_stalls_the_llm_until_cancelled(groq):
    groq.faults.inject(Fault.HANG)
    llm = create_llm(cloud_settings(groq=groq), NoLocalModels())
    rec = Recorder(llm)
    frames = [
        LLMContextFrame(user_context()),
        Await(lambda: groq.completions, "the request at the peer"),
        Observe(3.0, stop_early=lambda: rec.frames((ErrorFrame, LLMTextFrame))),
        CancelRun(),
    ]
    await drive(llm, frames, rec)

    assert not rec.frames(LLMTextFrame)
    assert not rec.errors()  # no timeout short of the SDK's 600 s
    assert len(groq.completions) == 1
    assert llm._client.timeout.read == 600 and llm._client.max_retries == 2


@pytest.mark.parametrize("fault, status", [(Fault.HTTP_500, 500), (Fault.HTTP_429, 429)])
async def test_cartesia_rejected_handshake_reports_errors_and_speaks_nothing(
    cartesia, fault, status
):
    cartesia.faults.inject(fault)
    tts = create_tts(cloud_settings(cartesia=cartesia), NoLocalModels())
    rec = Recorder(tts)
    frames = [
        TTSSpeakFrame(SPOKEN),
        Await(lambda: errors_matching(rec, "completed with no audio"), "the given-up context"),
    ]
    await drive(tts, frames, rec)

    rejected = errors_matching(rec, f"server rejected WebSocket connection: HTTP {status}")
    assert len(rejected) >= 2  # at start, and again when the sentence tried to connect
    assert errors_matching(rec, "Websocket not connected")
    assert not [f for f in rec.frames(TTSAudioRawFrame) if f.audio.strip(b"\x00")]
    assert not cartesia.contexts


@pytest.mark.parametrize(
    "fault",
    [{"kind": Fault.HANG}, {"kind": Fault.SLOW_FIRST_BYTE, "seconds": 4.0}],
    ids=["never_answers", "first_chunk_after_4s"],
)
async def test_cartesia_silent_context_is_given_up_after_3s(cartesia, fault):
    cartesia.faults.inject(**fault)
    tts = create_tts(cloud_settings(cartesia=cartesia), NoLocalModels())
    rec = Recorder(tts)

    def ctx_done():
        return any(c.done for c in cartesia.contexts.values())

    frames = [
        TTSSpeakFrame(SPOKEN),
        Await(lambda: errors_matching(rec, "completed with no audio"), "the given-up context"),
    ]
    if fault["kind"] is Fault.SLOW_FIRST_BYTE:
        # Let the late audio arrive: it is dropped.
        frames.append(Await(ctx_done, "the late audio and done"))
    await drive(tts, frames, rec)

    (error,) = rec.errors()
    assert "completed with no audio" in error.error
    assert not [f for f in rec.frames(TTSAudioRawFrame) if f.audio.strip(b"\x00")]
    if fault["kind"] is Fault.SLOW_FIRST_BYTE:
        (ctx,) = cartesia.contexts.values()
        assert ctx.chunks_sent > 0  # the peer did send it, late


@pytest.mark.parametrize(
    "fault",
    [{"kind": Fault.DISCONNECT, "after": 3}, {"kind": Fault.MALFORMED, "after": 3}],
    ids=["dropped_connection", "invalid_json"],
)
async def test_cartesia_broken_stream_reconnects_silently_and_loses_the_sentence(cartesia, fault):
    cartesia.faults.inject(**fault, times=1)
    tts = create_tts(cloud_settings(cartesia=cartesia), NoLocalModels())
    rec = Recorder(tts)
    second = "Second sentence here."

    def second_ctx():
        return next((c for c in cartesia.contexts.values() if c.text.strip() == second), None)

    frames = [
        TTSSpeakFrame(SPOKEN),
        Await(lambda: len(cartesia.connections) == 2, "the reconnection"),
        TTSSpeakFrame(second),
        Await(lambda: second_ctx() and any(f.context_id == second_ctx().context_id
                                           for f in rec.frames(TTSStoppedFrame)),
              "the second sentence spoken"),
    ]
    await drive(tts, frames, rec)

    assert not rec.errors(), rec.error_text()  # nothing reports the lost audio
    first = next(c for c in cartesia.contexts.values() if c.text.strip() == SPOKEN)
    heard = {
        cid: sum(len(f.audio) for f in rec.frames(TTSAudioRawFrame)
                 if f.context_id == cid and f.audio.strip(b"\x00"))
        for cid in (first.context_id, second_ctx().context_id)
    }
    assert heard[first.context_id] < first.audio_secs * OUT_RATE * 2  # cut short
    assert heard[second_ctx().context_id] == second_ctx().audio_bytes_sent  # spoken in full
    # ... yet all the first sentence's words came out as text.
    first_words = [f.text for f in rec.frames(TTSTextFrame) if f.context_id == first.context_id]
    assert " ".join(first_words) == SPOKEN


async def test_cartesia_wrong_shaped_message_is_skipped(cartesia):
    cartesia.faults.inject(Fault.MALFORMED, variant="schema", after=3)
    tts = create_tts(cloud_settings(cartesia=cartesia), NoLocalModels())
    rec = Recorder(tts)
    await drive(tts, [TTSSpeakFrame(SPOKEN), Await(tts_done(rec), "TTSStoppedFrame")], rec)
    assert not rec.errors(), rec.error_text()
    assert len(cartesia.connections) == 1


# --------------------------------------------------------------------------------------
# Daily: REST API, through Pipecat's own DailyRESTHelper
# --------------------------------------------------------------------------------------


CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=2.0)  # the bound a caller must set itself


def daily_helper(peer: DailyPeer, session: aiohttp.ClientSession, key: str = DAILY_KEY):
    from pipecat.transports.daily.utils import DailyRESTHelper

    return DailyRESTHelper(daily_api_key=key, daily_api_url=peer.base_url, aiohttp_session=session)


async def test_daily_rooms_and_tokens_through_the_rest_helper(daily):
    from pipecat.transports.daily.utils import DailyRoomParams, DailyRoomProperties

    async with aiohttp.ClientSession() as session:
        helper = daily_helper(daily, session)
        room = await helper.create_room(
            DailyRoomParams(name="voice-test", properties=DailyRoomProperties(exp=2e9))
        )
        assert room.name == "voice-test" and room.url.endswith("/voice-test")
        assert room.api_created and room.privacy == "public" and room.config.exp == 2e9
        assert (await helper.get_room_from_url(room.url)).id == room.id

        token = await helper.get_token(room.url, expiry_time=600, owner=True)
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["r"] == "voice-test" and claims["o"] is True
        assert claims["exp"] == pytest.approx(time.time() + 600, abs=5)
        assert daily.tokens[0]["room_name"] == "voice-test"

        assert await helper.delete_room_by_url(room.url)
        assert "voice-test" not in daily.rooms
        with pytest.raises(Exception, match="Room not found"):
            await helper.get_room_from_url(room.url)
        # A random name when none is given; a taken name is a 400.
        generated = await helper.create_room(DailyRoomParams())
        assert generated.name in daily.rooms
        with pytest.raises(Exception, match="status: 400"):
            await helper.create_room(DailyRoomParams(name=generated.name))
    assert all(r.headers["Authorization"] == f"Bearer {DAILY_KEY}" for r in daily.requests)


@pytest.mark.parametrize("fault, status", [(Fault.HTTP_429, 429), (Fault.HTTP_500, 500)])
async def test_daily_server_errors_surface_in_the_helper(daily, fault, status):
    from pipecat.transports.daily.utils import DailyRoomParams

    daily.faults.inject(fault)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(Exception, match=f"status: {status}"):
            await daily_helper(daily, session).create_room(DailyRoomParams())
        with pytest.raises(Exception, match=f"status: {status}"):
            await daily_helper(daily, session).get_token("https://x.daily.co/room")


async def test_daily_hang_is_bounded_only_by_the_session_timeout(daily):
    from pipecat.transports.daily.utils import DailyRoomParams

    daily.faults.inject(Fault.HANG, times=1)
    daily.faults.inject(Fault.MALFORMED, variant="schema", times=1)
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        with pytest.raises(TimeoutError):
            await daily_helper(daily, session).create_room(DailyRoomParams())
        # The next request gets a room object of the wrong shape: rejected by the model.
        with pytest.raises(Exception, match="Invalid response"):
            await daily_helper(daily, session).create_room(DailyRoomParams())


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
        services = ("DeepgramSTTService", "GroqLLMService", "CartesiaTTSService")
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
    from bot.local_models import LocalModels
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
    assert c.spy.texts("DeepgramSTTService", TranscriptionFrame) == [UTTERANCE]
    assert c.groq.completions[0]["messages"][-1] == {"role": "user", "content": UTTERANCE}
    assert "".join(c.spy.texts("GroqLLMService", LLMTextFrame)) == ANSWER
    assert [ctx.text.strip() for ctx in c.cartesia.contexts.values()] == [ANSWER]
    assert " ".join(c.spy.texts("CartesiaTTSService", TTSTextFrame)) == ANSWER

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
