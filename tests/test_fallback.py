"""Provider fallback (processors/fallback/): every injected cloud fault ends in speech.

Each test holds a real conversation through `run_bot` (file transport, fast mode) with
every stage on its cloud provider, the providers being the loopback peers of
`tests/peers/` with one fault injected. The question is real speech (the local Piper
voice); VAD, turn taking, and the local counterparts (Whisper, the llama.cpp server,
Piper) are the real ones, shared through the session `models` fixture.

Two questions per conversation. For the first, the fault: the conversation must still
produce a spoken answer (bot audio that is not silence, a turn record with the bot's
text), the switch is logged with the session id, counted in Prometheus and in the turn
record, and the first bot audio comes within 2 s of the fault becoming evident (the
switch), measured on the pipeline clock. For the second, asked after the back-off
(shortened here), the stage is on its cloud provider again: the peer answers it.

Peers are scripted with answers no local model would produce, so who answered is
visible in the transcript: Deepgram "hears" `DG_HEARD`, Groq answers `GROQ_SAID`,
Cartesia speaks a 330 Hz tone rather than a voice.

Nothing sleeps and hopes: conversations end when the script has been answered (bounded
by the transport's answer timeout), and every timing read is an event time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from loguru import logger
from pipecat.frames.frames import (
    OutputAudioRawFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport

from bot.config import Settings
from processors.fallback import ServiceFallbackFrame
from tests.peers import CartesiaPeer, DeepgramPeer, Fault, GroqPeer
from tests.support.audio import rms

pytestmark = pytest.mark.slow

DG_KEY, GROQ_KEY, CARTESIA_KEY = "dg-fallback-key", "gsk-fallback-key", "sk-cartesia-fallback"
QUESTION = "What is the capital of France?"
SECOND = "And which river runs through it?"
DG_HEARD = "Deepgram heard this question."
GROQ_SAID = "Groq says the answer is Paris."
EVIDENT_TO_SPEECH_SECS = 2.0  # the bound: speech within 2 s of the fault being evident
SILENCE_RMS = 300.0


# --------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------


class Watch(BaseObserver):
    """Fallback events, bot audio leaving the pipeline and who synthesized it (pipeline clock)."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[float, ServiceFallbackFrame]] = []
        self.loud_audio_at: list[float] = []
        self.tts_audio: dict[str, int] = {}  # service class → audio frames it made
        self.spoken: list[str] = []
        self.vad: list[tuple[float, bool]] = []  # (time, user speaking) as the VAD decided

    async def on_push_frame(self, data: FramePushed):
        frame, t = data.frame, data.timestamp / 1e9
        if isinstance(frame, ServiceFallbackFrame) and data.first_push:
            self.events.append((t, frame))
        elif isinstance(frame, (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)):
            if data.first_push and data.direction is FrameDirection.UPSTREAM:
                self.vad.append((t, isinstance(frame, VADUserStartedSpeakingFrame)))
        elif isinstance(data.source, BaseOutputTransport):
            if isinstance(frame, OutputAudioRawFrame) and rms(frame.audio) > SILENCE_RMS:
                self.loud_audio_at.append(t)
            elif isinstance(frame, TTSTextFrame):
                self.spoken.append(frame.text)
        elif isinstance(frame, TTSAudioRawFrame) and data.first_push and frame.audio.strip(b"\x00"):
            name = type(data.source).__name__
            self.tts_audio[name] = self.tts_audio.get(name, 0) + 1

    def of(self, event: str) -> list[tuple[float, ServiceFallbackFrame]]:
        return [(t, f) for t, f in self.events if f.event == event]

    def first_speech_after(self, t: float) -> float | None:
        return next((a for a in self.loud_audio_at if a >= t), None)

    def evident(self, t: float) -> float:
        """When a fault at `t` becomes evident to the caller: at once, or, if they are
        still speaking then, when they stop (the VAD stop)."""
        speaking = [s for at, s in self.vad if at <= t]
        if speaking and speaking[-1]:
            return next((at for at, s in self.vad if at > t and not s), t)
        return t


@dataclass
class Peers:
    deepgram: DeepgramPeer
    groq: GroqPeer
    cartesia: CartesiaPeer


@dataclass
class Outcome:
    turns: list[dict]
    watch: Watch
    peers: Peers
    logs: list[Any]
    fallbacks_metric: str
    session_id: str
    bot_audio: bytes
    extra: dict = field(default_factory=dict)

    def metric(self, stage: str, reason: str) -> float:
        needle = f'voice_agent_fallbacks_total{{reason="{reason}",stage="{stage}"}} '
        line = next((l for l in self.fallbacks_metric.splitlines() if l.startswith(needle)), None)
        return float(line.split()[-1]) if line else 0.0


def fallback_settings(peers: Peers, stage: str, **overrides) -> Settings:
    """Every stage on its peer; the stage under test keeps its default first-byte budget,
    the others get a generous one (the peers share the test's loaded event loop)."""
    values: dict[str, Any] = dict(
        _env_file=None,
        stt_provider="cloud",
        llm_provider="cloud",
        tts_provider="cloud",
        search_provider="local",
        search_enabled=False,  # the small local model would sometimes call the tool
        deepgram_api_key=DG_KEY,
        groq_api_key=GROQ_KEY,
        cartesia_api_key=CARTESIA_KEY,
        tavily_api_key=None,
        daily_api_key=None,
        deepgram_base_url=peers.deepgram.ws_url,
        groq_base_url=f"{peers.groq.base_url}/openai/v1",
        cartesia_base_url=peers.cartesia.ws_url,
        greeting="",
        # Not under test, and CPU the loaded test machine lacks: per-frame denoising and
        # the smart-turn model at every pause (a fixed silence timeout ends the turn).
        denoise_enabled=False,
        smart_turn_enabled=False,
        # The local model is slow on a loaded 2-core machine: short prompt, short answers,
        # and time to give them (the hold phrase covers the wait).
        system_prompt="You are a voice assistant. Answer in one short sentence.",
        llm_max_tokens=16,
        fallback_local_timeout_secs=45.0,
        fallback_retry_secs=1.0,
        fallback_retry_max_secs=1.0,
        # The hold phrase early, so that the 2 s bound holds with margin on a
        # machine loaded by other runs (frames then take up to a second to cross the
        # pipeline); Whisper may take seconds there too, so the turn waits longer for it.
        fallback_hold_secs=0.5,
        user_turn_stop_timeout=10.0,
    )
    for other in {"stt", "llm", "tts"} - {stage}:
        values[f"fallback_{other}_budget_secs"] = 10.0
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def peers():
    async with (
        DeepgramPeer(api_key=DG_KEY) as deepgram,
        GroqPeer(api_key=GROQ_KEY, default_reply=GROQ_SAID) as groq,
        CartesiaPeer(api_key=CARTESIA_KEY) as cartesia,
    ):
        deepgram.script(*[DG_HEARD] * 6)
        yield Peers(deepgram, groq, cartesia)


def gated_transport(script, params):
    """The file transport, asking each next question only once the previous turn's record
    is out (the hold phrase is bot speech too, and must not count as the answer)."""
    from transports.file import FileInputTransport, FileTransport

    class GatedInput(FileInputTransport):
        def _answered(self, starts_before):
            spoke = super()._answered(starts_before)
            asked = self._transport.utterances_sent
            return lambda: spoke() and len(self._transport.turns) >= asked

    class GatedTransport(FileTransport):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.turns = []

        def input(self):
            if not self._input:
                self._input = GatedInput(self, self.params, name=self._input_name)
            return self._input

    return GatedTransport(script, params)


@pytest.fixture
def converse_with(models, speech, peers):
    """Run a two-question conversation on the cloud stack; returns an `Outcome`."""
    from bot.pipeline import Session, run_bot
    from transports.file import FileTransportParams, Utterance
    from processors.observers.provider_errors import ProviderErrorObserver
    from web.observability import Metrics

    async def run(stage: str, *, local_models=None, questions=(QUESTION, SECOND), fast=True, **overrides) -> Outcome:
        settings = fallback_settings(peers, stage, **overrides)
        watch = Watch()
        metrics = Metrics()
        transport = gated_transport(
            [Utterance(speech(q)) for q in questions],
            FileTransportParams(fast=fast, reply_pause_secs=1.5, answer_timeout_secs=60.0),
        )
        session = Session(
            settings=settings,
            models=local_models or models,
            transport_kind="file",
            observers=[watch, ProviderErrorObserver(metrics.errors, None, metrics.fallbacks)],
            on_turn=[transport.turns.append],
        )
        logs: list[Any] = []
        words = ("fallback", "trying", "apologis")
        sink = logger.add(logs.append, level="INFO", filter=lambda r: any(w in r["message"].lower() for w in words))
        try:
            await asyncio.wait_for(run_bot(transport, session), timeout=180)
        finally:
            logger.remove(sink)
        return Outcome(
            turns=[t.to_dict() for t in sorted(transport.turns, key=lambda t: t.turn)],
            watch=watch,
            peers=peers,
            logs=logs,
            fallbacks_metric=metrics.exposition().decode(),
            session_id=session.id,
            bot_audio=bytes(transport.bot_audio),
        )

    return run


def assert_fell_back_and_recovered(o: Outcome, stage: str, reason: str) -> None:
    """The common checks: switch logged and counted, speech in time, answers, retry."""
    fallbacks = o.watch.of("fallback")
    assert [(f.stage, f.reason) for _, f in fallbacks] == [(stage, reason)], o.watch.events
    at, event = fallbacks[0]
    # Logged, with the session's id on the line.
    line = next((m for m in o.logs if f"{stage.upper()} fallback" in m.record["message"]), None)
    assert line is not None, [m.record["message"] for m in o.logs]
    assert line.record["extra"].get("session_id") == o.session_id
    # Counted (Prometheus), and in the turn record of the turn it happened in (if any).
    assert o.metric(stage, reason) == 1.0, o.fallbacks_metric
    if event.redo:
        assert f"{stage}:{reason}" in o.turns[0].get("fallbacks", []), o.turns
        # Something is heard within 2 s of the fault being evident (the switch, or the
        # end of the user's speech if the STT failed while they were still talking).
        evident = o.watch.evident(at)
        spoke_at = o.watch.first_speech_after(evident)
        assert spoke_at is not None, "no bot audio after the fallback"
        assert spoke_at - evident <= EVIDENT_TO_SPEECH_SECS, f"silent for {spoke_at - evident:.2f}s after the fault"
    # Both questions answered aloud, with text in the turn records.
    assert len(o.turns) == 2, o.turns
    assert all(t["bot_text"].strip() for t in o.turns), o.turns
    assert rms(o.bot_audio) > SILENCE_RMS
    # After the back-off the cloud is used again.
    retries = o.watch.of("retry")
    assert retries and retries[0][0] > at, o.watch.events
    assert not o.watch.of("apology"), o.watch.events


# --------------------------------------------------------------------------------------
# STT: Deepgram → Whisper
# --------------------------------------------------------------------------------------

STT_FAULTS = {
    "http_500": ({"kind": Fault.HTTP_500, "times": 1}, "error", {"fallback_retry_secs": 3.0}),
    "never_answers": ({"kind": Fault.HANG, "times": 1}, "timeout", {}),
    "dropped_connection": ({"kind": Fault.DISCONNECT, "after": 1, "times": 1}, "error", {}),
    "malformed_message": ({"kind": Fault.MALFORMED, "after": 1, "times": 1}, "error", {}),
    "slow_first_byte": ({"kind": Fault.SLOW_FIRST_BYTE, "seconds": 4.0, "times": 1}, "timeout", {}),
}


@pytest.mark.parametrize("fault", list(STT_FAULTS))
async def test_stt_fault_is_answered_by_whisper_then_deepgram_again(converse_with, peers, fault):
    spec, reason, overrides = STT_FAULTS[fault]
    peers.deepgram.faults.inject(**spec)
    # In real time: a burst of fast-mode audio outruns the VAD frames that come back up
    # to the STT, and a segmented STT keeps only 1 s of audio before the VAD start.
    o = await converse_with("stt", fast=False, **overrides)

    assert_fell_back_and_recovered(o, "stt", reason)
    first, second = o.turns
    # Whisper transcribed the first question (Deepgram's scripted text never reached us),
    # Deepgram the second.
    assert first["user_text"] and first["user_text"] != DG_HEARD, first
    assert "capital" in first["user_text"].lower(), first
    assert second["user_text"] == DG_HEARD, second
    assert first["bot_text"] == GROQ_SAID and second["bot_text"] == GROQ_SAID


async def test_an_utterance_whose_tail_is_never_finalized_is_finished_by_whisper(
    converse_with, peers
):
    """Real Deepgram finalizes an utterance in pieces, and its `Finalize` is not always
    answered: the words after the last final ("question.") would be lost. Within the STT
    budget Whisper transcribes the audio since that final; the turn goes on."""
    peers.deepgram.final_every_ms = 600  # a final mid-utterance, as at a pause...
    peers.deepgram.ms_per_word = 500  # ...with words still to come after it
    peers.deepgram.lose_tails = 1
    o = await converse_with("stt", fast=False)

    assert_fell_back_and_recovered(o, "stt", "timeout")
    first, second = o.turns
    finals = [r["channel"]["alternatives"][0]["transcript"]
              for r in peers.deepgram.connections[0].results(final=True)]
    finalized = " ".join(t for t in finals if t)
    assert finalized and "question" not in finalized, finals
    assert first["user_text"].startswith(finalized), first
    assert len(first["user_text"]) > len(finalized) + 2, first  # ...and Whisper's tail
    assert second["user_text"] == DG_HEARD, second


# --------------------------------------------------------------------------------------
# LLM: Groq → local llama.cpp
# --------------------------------------------------------------------------------------

LLM_FAULTS = {
    # No SDK retries (bot/cloud_services.GroqLLM): the first 500 fails the turn.
    "http_500": ({"kind": Fault.HTTP_500, "times": 1}, "error"),
    "never_answers": ({"kind": Fault.HANG, "times": 1}, "timeout"),
    "dropped_connection": ({"kind": Fault.DISCONNECT, "after": 3, "times": 1}, "error"),
    "malformed_message": ({"kind": Fault.MALFORMED, "after": 3, "times": 1}, "error"),
    "slow_first_byte": ({"kind": Fault.SLOW_FIRST_BYTE, "seconds": 4.0, "times": 1}, "timeout"),
}


@pytest.mark.parametrize("fault", list(LLM_FAULTS))
async def test_llm_fault_is_answered_by_the_local_llm_then_groq_again(converse_with, peers, fault):
    spec, reason = LLM_FAULTS[fault]
    peers.groq.faults.inject(**spec)
    o = await converse_with("llm")

    assert_fell_back_and_recovered(o, "llm", reason)
    first, second = o.turns
    # The local model answered the first question; a broken Groq answer's first words
    # ("Groq says") were withdrawn, not spoken before it.
    assert first["bot_text"] and GROQ_SAID not in first["bot_text"], first
    assert not first["bot_text"].startswith("Groq"), first
    assert second["bot_text"] == GROQ_SAID, second
    assert peers.groq.completions[-1]["messages"][-1]["content"] == DG_HEARD


async def test_a_mid_stream_tool_use_failed_is_answered_by_the_local_llm(converse_with, peers):
    """Groq answers 200, writes a few words, then `data: {"error": {"code":
    "tool_use_failed"}}`: the words are withdrawn and the local LLM answers, in time."""
    peers.groq.reply_midstream_error(after_text="Groq says")
    o = await converse_with("llm")

    assert_fell_back_and_recovered(o, "llm", "error")
    first, second = o.turns
    assert first["bot_text"] and not first["bot_text"].startswith("Groq"), first
    assert second["bot_text"] == GROQ_SAID, second


# --------------------------------------------------------------------------------------
# TTS: Cartesia → Piper
# --------------------------------------------------------------------------------------

TTS_FAULTS = {
    "http_500": ({"kind": Fault.HTTP_500, "times": 1}, "error", {"fallback_retry_secs": 3.0}),
    "never_answers": ({"kind": Fault.HANG, "times": 1}, "timeout", {}),
    "dropped_connection": ({"kind": Fault.DISCONNECT, "after": 3, "times": 1}, "disconnect", {}),
    "malformed_message": ({"kind": Fault.MALFORMED, "after": 3, "times": 1}, "disconnect", {}),
    "slow_first_byte": ({"kind": Fault.SLOW_FIRST_BYTE, "seconds": 4.0, "times": 1}, "timeout", {}),
}


@pytest.mark.parametrize("fault", [*TTS_FAULTS, "concurrency_limited"])
async def test_tts_fault_is_spoken_by_piper_then_cartesia_again(converse_with, peers, fault):
    if fault == "concurrency_limited":  # a 429 for the answer's context, mid-session
        spec, reason, overrides = None, "error", {}
        peers.cartesia.refuse_contexts = 1
    else:
        spec, reason, overrides = TTS_FAULTS[fault]
        peers.cartesia.faults.inject(**spec)
    o = await converse_with("tts", **overrides)

    assert_fell_back_and_recovered(o, "tts", reason)
    assert o.watch.tts_audio.get("SharedPiperTTSService", 0) > 0, o.watch.tts_audio
    # The second answer went to Cartesia and was spoken in full.
    done = [c for c in peers.cartesia.contexts.values() if c.done and c.chunks_sent]
    assert done and done[-1].text.strip() == GROQ_SAID, [(c.text, c.done) for c in peers.cartesia.contexts.values()]
    assert [t["bot_text"] for t in o.turns] == [GROQ_SAID, GROQ_SAID]


# --------------------------------------------------------------------------------------
# The local counterpart fails too: a spoken apology, never silence
# --------------------------------------------------------------------------------------

APOLOGY = Settings(_env_file=None).fallback_apology


class BrokenModel:
    """A local model that fails on use (Whisper's transcribe, Piper's synthesize)."""

    config = SimpleNamespace(sample_rate=22050)

    def transcribe(self, *args, **kwargs):
        raise RuntimeError("the local model is broken")

    def synthesize(self, *args, **kwargs):
        raise RuntimeError("the local model is broken")


def models_with(models, *, whisper=None, piper=None, local_llm_url=None):
    """The session's loaded models, with one local model replaced (for this test only)."""
    from bot.local.models import LocalModels
    from tests.support.settings import local_settings

    copy = LocalModels(local_settings(**({"local_llm_url": local_llm_url} if local_llm_url else {})))
    copy._whisper = whisper or models._whisper
    copy._piper = piper or models._piper
    copy._silero, copy._smart_turn = models._silero, models._smart_turn
    copy._llm = None if local_llm_url else models._llm
    return copy


def assert_apologised(o: Outcome, stage: str) -> None:
    (at, event), = o.watch.of("apology")
    assert event.stage == stage, o.watch.events
    fallback_at = o.watch.of("fallback")[0][0]
    # Never silence: something is heard within 2 s of the fault, and after the local
    # failure the apology itself is spoken (by Cartesia: every TTS input is recorded).
    spoke_at = o.watch.first_speech_after(o.watch.evident(fallback_at))
    assert spoke_at is not None and spoke_at - o.watch.evident(fallback_at) <= EVIDENT_TO_SPEECH_SECS
    spoken = [c.text.strip() for c in o.peers.cartesia.contexts.values() if c.chunks_sent]
    assert APOLOGY in spoken, spoken
    assert o.watch.first_speech_after(at) is not None
    line = next((m for m in o.logs if "apologising" in m.record["message"]), None)
    assert line is not None and line.record["extra"].get("session_id") == o.session_id


async def test_whisper_failing_too_means_an_apology(converse_with, models, peers):
    peers.deepgram.faults.inject(Fault.HANG, times=1)
    o = await converse_with(
        "stt", fast=False, local_models=models_with(models, whisper=BrokenModel()), user_turn_stop_timeout=3.0
    )
    assert_apologised(o, "stt")
    assert o.turns[-1]["user_text"] == DG_HEARD  # and Deepgram is back for the next question


async def test_local_llm_failing_too_means_an_apology(converse_with, models, peers):
    async with GroqPeer(api_key=None, check_models=False) as broken_local:
        # The local server answers the warm-up, then fails every answer.
        broken_local.faults.inject(Fault.SLOW_FIRST_BYTE, seconds=0.0, times=1)
        broken_local.faults.inject(Fault.HTTP_500)
        peers.groq.faults.inject(Fault.HTTP_500, times=1)
        local = models_with(models, local_llm_url=f"{broken_local.base_url}/v1")
        o = await converse_with("llm", local_models=local)
    assert_apologised(o, "llm")
    assert len(broken_local.completions) >= 2  # the warm-up, then the failed answer
    assert o.turns[-1]["bot_text"] == GROQ_SAID  # and Groq is back for the next question


async def test_piper_failing_too_means_an_apology_through_cartesia(converse_with, models, peers):
    peers.cartesia.faults.inject(Fault.HANG, times=1)
    o = await converse_with("tts", local_models=models_with(models, piper=BrokenModel()))
    assert_apologised(o, "tts")
    assert o.watch.tts_audio.get("SharedPiperTTSService", 0) == 0


# --------------------------------------------------------------------------------------
# Wiring: which stages get a fallback, and nothing loads until it is needed
# --------------------------------------------------------------------------------------


class Untouchable:
    """LocalModels' place: anything fetched from it fails the test."""

    def __init__(self):
        self.touched: list[str] = []

    def __getattr__(self, name):
        self.touched.append(name)
        raise AssertionError(f"LocalModels.{name} fetched while building the services")


def cloud_only(**overrides) -> Settings:
    values: dict[str, Any] = dict(
        _env_file=None, stt_provider="cloud", llm_provider="cloud", tts_provider="cloud",
        deepgram_api_key=DG_KEY, groq_api_key=GROQ_KEY, cartesia_api_key=CARTESIA_KEY,
        deepgram_base_url="ws://127.0.0.1:9", groq_base_url="http://127.0.0.1:9/v1",
        cartesia_base_url="ws://127.0.0.1:9",
    )
    return Settings(**{**values, **overrides})


def test_cloud_stages_get_a_local_fallback_built_without_loading_a_model():
    from bot.cloud_services import CartesiaTTS, DeepgramSTT, GroqLLM
    from bot.local.services import SharedPiperTTSService, SharedWhisperSTTService
    from bot.providers import LocalLLMService, create_llm, create_stt, create_tts
    from processors.fallback import LLMFallback, STTFallback, TTSFallback

    models = Untouchable()
    settings = cloud_only()
    stt, llm, tts = (create(settings, models) for create in (create_stt, create_llm, create_tts))
    assert not models.touched
    assert isinstance(stt, STTFallback) and type(stt.cloud) is DeepgramSTT
    assert type(stt.local) is SharedWhisperSTTService  # plain: it transcribes replays whole
    assert isinstance(llm, LLMFallback) and type(llm.cloud) is GroqLLM
    assert type(llm.local) is LocalLLMService
    assert llm.settings.system_instruction == settings.system_prompt
    assert isinstance(tts, TTSFallback) and type(tts.cloud) is CartesiaTTS
    assert type(tts.local) is SharedPiperTTSService


def test_no_fallback_when_disabled_local_or_without_local_models():
    from bot.cloud_services import DeepgramSTT, GroqLLM
    from bot.local.services import SharedPiperTTSService
    from bot.providers import create_llm, create_stt, create_tts

    assert type(create_stt(cloud_only(fallback_enabled=False), Untouchable())) is DeepgramSTT
    assert type(create_llm(cloud_only(), None)) is GroqLLM  # no local stack to fall back on
    piper = SimpleNamespace(piper=object())
    assert type(create_tts(cloud_only(tts_provider="local"), piper)) is SharedPiperTTSService


async def test_instructions_addressed_to_the_llm_switcher_reach_both_llms():
    from pipecat.frames.frames import LLMUpdateSettingsFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.services.settings import LLMSettings
    from pipecat.tests.utils import run_test

    from bot.providers import create_llm

    llm = create_llm(cloud_only(fallback_warm=False), Untouchable())
    frame = LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction="Be brief."), service=llm)
    await run_test(Pipeline([llm]), frames_to_send=[frame], expected_down_frames=None)
    assert llm.cloud.settings.system_instruction == "Be brief."
    assert llm.local.settings.system_instruction == "Be brief."


def test_backoff_doubles_up_to_its_cap():
    from processors.fallback import FallbackPolicy

    policy = FallbackPolicy(budget_secs=1.0, retry_secs=30.0, retry_max_secs=100.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [30.0, 60.0, 100.0, 100.0]
