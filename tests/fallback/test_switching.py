"""Each cloud stage's faults, injected at its loopback peer, answered by its local counterpart,
and the cloud provider used again after the back-off (tests/fallback/conftest.py)."""

from __future__ import annotations

import pytest

from tests.fallback.harness import (
    DG_HEARD,
    QUESTION,
    GROQ_SAID,
    assert_fell_back_and_recovered,
)
from tests.peers import Fault
from tests.text import normalise

pytestmark = pytest.mark.slow


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
    peers.deepgram.lose_tails = 1  # ...and the last word in interims only
    # Whisper takes longer than the budget for the tail (its whole 30 s window decoded):
    # the turn still ends on the whole question, not on "Deepgram heard this" and then a
    # turn of the tail's own.
    o = await converse_with(
        "stt", fast=False, whisper_window_secs=30.0, fallback_stt_budget_secs=0.5
    )

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
    assert done and done[-1].text.strip() == GROQ_SAID, [
        (c.text, c.done) for c in peers.cartesia.contexts.values()]
    assert [t["bot_text"] for t in o.turns] == [GROQ_SAID, GROQ_SAID]




async def test_a_lost_tail_joins_the_cloud_finals_as_one_question(converse_with, peers):
    """The tail Whisper hears starts a little before the cloud's last final (it lags the
    audio): the words both heard are said once, and Whisper goes on from the cloud's words
    (`continue_from`)."""
    peers.deepgram.transcripts.clear()
    peers.deepgram.script(QUESTION, *[DG_HEARD] * 5)  # the cloud hears the real words
    peers.deepgram.final_every_ms = 600
    peers.deepgram.lose_tails = 1
    o = await converse_with("stt", fast=False)

    assert_fell_back_and_recovered(o, "stt", "timeout")
    first, second = o.turns
    assert normalise(first["user_text"]) == normalise(QUESTION), first
    assert second["user_text"] == DG_HEARD, second
