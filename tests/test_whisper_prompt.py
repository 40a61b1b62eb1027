"""What the local recogniser reads before a turn (bot/local/whisper_prompt.py)."""

import pytest
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.local.whisper_prompt import (
    OPENING,
    ConversationPrompt,
    answered_exchange,
    repeats_prompt,
)
from tests.text import contains_words


def test_the_prompt_is_the_last_exchange_of_the_context_it_follows():
    context = LLMContext([{"role": "system", "content": "Be brief."}])
    prompt = ConversationPrompt(vocabulary="Brightline eSIM")
    prompt.follow(context)
    assert prompt() == f"Brightline eSIM {OPENING}"  # nothing said yet
    context.add_message({"role": "assistant", "content": "Hi! I'm listening."})  # the greeting
    assert prompt() == "Brightline eSIM Hi! I'm listening."
    context.add_message({"role": "user", "content": "What is the capital of Italy?"})
    assert prompt() == "Brightline eSIM"  # the bot is answering: words now are over it
    context.add_message({"role": "assistant", "content": "Rome."})
    assert prompt() == "Brightline eSIM What is the capital of Italy? Rome."
    context.add_message({"role": "user", "content": "What is five plus five?"})
    context.add_message({"role": "assistant", "content": [{"type": "text", "text": "Ten."}]})
    assert prompt() == "Brightline eSIM What is five plus five? Ten."


def test_a_reply_after_a_tool_call_is_one_reply_and_the_tool_result_is_not_read():
    context = LLMContext(
        [
            {"role": "user", "content": "Who won the match?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "tool", "tool_call_id": "1", "content": '{"winner": "Porto"}'},
            {"role": "assistant", "content": "Porto won."},
        ]
    )
    assert answered_exchange(context) == "Who won the match? Let me check. Porto won."


def test_a_long_reply_keeps_its_end_cut_at_a_word():
    context = LLMContext(
        [
            {"role": "user", "content": "Tell me a story."},
            {"role": "assistant", "content": "Once upon a time " * 40 + "they lived happily."},
        ]
    )
    prompt = ConversationPrompt(max_chars=60)
    prompt.follow(context)
    text = prompt()
    assert len(text) <= 60 and text.endswith("they lived happily.")
    assert text.split()[0] in ("Once", "upon", "a", "time")  # whole words only



async def test_the_session_pipeline_hands_its_context_to_the_recogniser(settings, models):
    """`Providers.services` → `build_pipeline`: the local Whisper of a session reads the
    context that session's pipeline writes."""
    import numpy as np
    from pipecat.frames.frames import TranscriptionFrame

    from bench import voices
    from bench.spoken_qa import spoken
    from bot.pipeline import build_pipeline
    from bot.providers import Providers
    from tests.support.fakes import InstantLLMService, InstantTTSService
    from tests.support.pipeline import NoTransport

    if not voices.get("flite-awb").available():
        pytest.skip("flite-awb needs flite (`make test` installs it)")

    class LocalRecogniserOnly(Providers):
        def llm(self, settings, models):
            return InstantLLMService()

        def tts(self, settings, models):
            return InstantTTSService(secs_per_char=0)

    services = LocalRecogniserOnly().services(settings, models)
    built = build_pipeline(settings, services, NoTransport(), models)
    built.context.add_message({"role": "user", "content": "What is the capital of Italy?"})
    built.context.add_message({"role": "assistant", "content": "The capital of Italy is Rome."})
    audio, _ = spoken("What about Spain?", "flite-awb", "clean", piper=None)
    frames = [f async for f in services.stt.run_stt(audio.astype(np.int16).tobytes())]
    heard = " ".join(f.text for f in frames if isinstance(f, TranscriptionFrame))
    assert "spain" in heard.lower(), heard  # unprompted: "What about spin?" (test_stt.py)


def test_words_that_go_on_with_the_prompt_are_told_from_words_that_share_a_few():
    """A transcript repeating four words in a row of its prompt is transcribed again without
    it (`transcribe_prompted`): the one the comma-paused question in espeak's slow voice got."""
    assert repeats_prompt("Tell me along. Did I help you today?", OPENING)
    exchange = "What is the capital of France? The capital of France is Paris."
    assert not repeats_prompt("How many people live in Paris?", exchange)
    # Heard again unprompted too, as every turn was before the prompt: a decode more.
    assert repeats_prompt("And what is the capital of Spain?", exchange)


async def test_whisper_goes_on_from_words_another_recogniser_heard(models):
    """A tail replayed after the cloud's finals (processors/fallback/stt.py) is read after
    those words: in an unfamiliar voice Whisper alone hears nothing in "...months are there
    in a year?", and goes on from "How many months" to the rest of the question."""
    import numpy as np

    from bench import voices
    from bench.common import speech_bounds
    from bot.local.whisper_stt import SharedWhisperSTTService

    question = "How many months are there in a year?"
    try:
        audio = voices.synthesize(question, "flite-awb")
    except voices.VoiceUnavailable as e:
        pytest.skip(f"flite's awb voice: {e}")
    first, last = speech_bounds(audio)
    cut = int(first + 0.45 * (last - first)) - int(0.3 * voices.SAMPLE_RATE)
    tail = np.concatenate([audio[cut:], np.zeros(voices.SAMPLE_RATE // 5, np.int16)]).tobytes()

    stt = SharedWhisperSTTService(model=models.whisper)
    stt.continue_from("How many months")
    heard = " ".join([f.text async for f in stt.run_stt(tail)])
    assert contains_words(heard, "there", "year"), heard
