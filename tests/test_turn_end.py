"""The turn-end rule on its own: which words end a turn at the VAD's stop
(bot/turns/turn_end.py)."""

import pytest

from bot.turns.turn_end import Verdict, decide, looks_unfinished, pause_wait


@pytest.mark.parametrize(
    "text",
    [
        "Tell me a long,",
        "My name is Alex and",
        "Tell me about the",
        "I want to go to",
        "If you had to pick one city.",
        "When I get home tonight",
        "So, um",
    ],
)
def test_words_that_stop_mid_sentence(text):
    assert looks_unfinished(text)


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "How many legs does a spider have?",
        "Where are you from?",
        "If you had to pick one city, which would you visit first?",
        "Tell me about Paris.",
        "Thanks.",
    ],
)
def test_whole_sentences(text):
    assert not looks_unfinished(text)


def test_a_whole_question_ends_at_the_stop_whatever_smart_turn_says():
    assert decide(False, "What is the capital of France?") is Verdict.END
    assert decide(True, "What is the capital of France?") is Verdict.END


def test_anything_else_waits_for_the_speakers_pause_unless_words_and_sound_are_unfinished():
    assert decide(True, "Tell me along.") is Verdict.WAIT  # a fragment Whisper closed with "."
    assert decide(True, "Tell me a long,") is Verdict.WAIT
    assert decide(False, "Tell me about Paris.") is Verdict.WAIT
    assert decide(False, "Tell me a long,") is Verdict.SMART_TURN


def test_the_wait_follows_the_speakers_own_pauses():
    assert pause_wait([], 1.3, 0.55, 1.0) == 0.55
    assert pause_wait([0.3, 0.6], 1.3, 0.55, 1.0) == pytest.approx(0.78)
    assert pause_wait([2.0], 1.3, 0.55, 1.0) == 1.0


def test_only_the_local_eager_whisper_answers_every_segment():
    """The turn end waits for a segment's words only from an STT that always sends them:
    the local eager Whisper, not Deepgram (whose tail may never be finalized)."""
    from bot.providers import stt_answers_every_segment
    from tests.support.settings import local_settings

    assert stt_answers_every_segment(local_settings()) is True
    assert stt_answers_every_segment(local_settings(whisper_eager=False)) is False
    cloud = local_settings(stt_provider="cloud", deepgram_api_key="dg-test")
    assert stt_answers_every_segment(cloud) is False
