"""Contract tests: each cloud service, built by our factory, against its loopback peer
(tests/support/cloud.py): Deepgram's live transcripts, Groq's streamed chat and tool calls,
Cartesia's speech over a WebSocket, and what went over the wire."""

from __future__ import annotations

import json

import pytest
from pipecat.frames.frames import (
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
    TTSTextFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection

from bot.providers import create_llm, create_stt, create_tts
from tests.peers.cartesia import CartesiaPeer
from tests.support.audio import rms
from tests.support.cloud import (
    ANSWER,
    CARTESIA_KEY,
    DG_KEY,
    GROQ_KEY,
    IN_RATE,
    OUT_RATE,
    SPOKEN,
    UTTERANCE,
    Await,
    NoLocalModels,
    Recorder,
    Send,
    cloud_settings,
    drive,
    llm_done,
    mic_frames,
    silence,
    speech,
    tone,
    transcribed,
    tts_done,
    user_context,
)

# --------------------------------------------------------------------------------------
# Deepgram: live STT
# --------------------------------------------------------------------------------------


async def test_deepgram_streams_interim_then_final_transcripts(deepgram):
    deepgram.script(UTTERANCE)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    rec = Recorder(stt)
    audio = speech()
    await drive(stt, [*audio, Await(transcribed(rec), "the whole transcript")], rec)

    interims = [f.text for f in rec.frames(InterimTranscriptionFrame)]
    finals = [f.text for f in rec.frames(TranscriptionFrame)]
    assert " ".join(finals) == UTTERANCE
    # Finals survive an interruption broadcast right behind them (tests/test_transcripts.py).
    assert not any(f.interruptible for f in rec.frames(TranscriptionFrame))
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

