"""Faults the providers really produce, injected at the loopback peers, and what OUR
services (bot/cloud_services.py) make of them, with the fallback off; tests/fallback/
checks the whole turn with it. Nothing here tests a peer by itself or pins a Pipecat bug."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.utils.errors import ErrorCategory
from pydantic import SecretStr

from bot.providers import create_llm, create_stt, create_tts
from processors.fallback import ConnectTimeout, ContextFreeError
from tests.peers.cartesia import CartesiaPeer
from tests.peers.faults import Fault
from tests.support.cloud import (
    CARTESIA_KEY,
    DG_KEY,
    SPOKEN,
    UTTERANCE,
    Await,
    Do,
    NoLocalModels,
    Recorder,
    Send,
    cloud_settings,
    drive,
    llm_done,
    speech,
    transcribed,
    user_context,
)


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


async def test_deepgram_429s_in_a_row_are_retried_until_let_in(deepgram):
    """The limit can last: the second 429 comes while the first retry is still connecting.
    One retry loop goes on, each wait longer than the last, until Deepgram lets it in."""
    deepgram.script(UTTERANCE)
    deepgram.faults.inject(Fault.HTTP_429, times=3)
    stt = create_stt(cloud_settings(deepgram=deepgram), NoLocalModels())
    stt.RETRY_FIRST_SECS = 0.1  # back-off 0.1, 0.2, 0.4 s: the growth, not the wait, is tested
    rec = Recorder(stt)
    frames = [
        Await(lambda: len(deepgram.connections) == 4 and stt.connected, "the third retry"),
        *[Send(f) for f in speech()],
        Await(transcribed(rec), "the whole transcript"),
    ]
    await drive(stt, frames, rec)

    assert deepgram.faults.count(Fault.HTTP_429) == 3
    assert len(deepgram.connections) == 4  # one attempt per refusal, and one let in
    errors = rec.errors()
    assert [e.category for e in errors] == [ErrorCategory.RATE_LIMIT] * 3, rec.error_text()
    waits = [e.error.split("retrying in ")[1] for e in errors]
    assert waits == ["0.1s", "0.2s", "0.4s"], waits
    assert stt.is_usable
    assert " ".join(f.text for f in rec.frames(TranscriptionFrame)) == UTTERANCE


def test_deepgram_429_wait_honours_retry_after_up_to_the_cap():
    """The peer's refusal says no Retry-After (Deepgram documents none for the handshake);
    if one comes it is honoured. The SDK's ApiError carries the request's headers, so the
    response's are read from the websockets error it is raised from, built here as the SDK
    meets it (deepgram.core.websocket_compat)."""
    import warnings

    from deepgram.core.api_error import ApiError
    from websockets.datastructures import Headers

    from bot.cloud_services import DeepgramSTT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from deepgram.core.websocket_compat import InvalidWebSocketStatus

    def refusal(retry_after: str | None) -> ApiError:
        headers = Headers({"Retry-After": retry_after} if retry_after else {})
        try:
            try:
                if InvalidWebSocketStatus.__name__ == "InvalidStatusCode":  # websockets.legacy
                    raise InvalidWebSocketStatus(429, headers)
                from websockets.http11 import Response

                raise InvalidWebSocketStatus(Response(429, "Too Many Requests", headers))
            except InvalidWebSocketStatus:
                raise ApiError(status_code=429, headers={"Authorization": "Token k"}, body="")
        except ApiError as e:
            return e

    stt = DeepgramSTT(api_key=DG_KEY)
    stt._rate_limited = 2  # the second 429 in a row: 2 s of back-off
    assert stt.retry_delay(refusal(None)) == 2.0
    assert stt.retry_delay(refusal("1")) == 2.0  # never sooner than the back-off
    assert stt.retry_delay(refusal("7")) == 7.0
    assert stt.retry_delay(refusal("3600")) == DeepgramSTT.RETRY_MAX_SECS
    assert stt.retry_delay(refusal("soon")) == 2.0
    stt._rate_limited = 10
    assert stt.retry_delay(refusal(None)) == DeepgramSTT.RETRY_MAX_SECS


async def test_deepgram_unanswered_handshake_does_not_hold_the_pipeline_start(deepgram):
    """Unbounded, the SDK waits 10 s per attempt, past the `PipelineWorker`'s setup timeout: the
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

        def contexts():
            return list(cartesia.contexts.values())

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

