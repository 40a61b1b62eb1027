"""Whisper over a window fitted to the utterance: same words as the 30 s window, and
the stock window whenever the short one is not to be trusted."""

import numpy as np
import pytest

from bot.local import whisper_window
from bot.local.whisper_window import WindowedWhisper, trailing_repeat_start
from tests.support.audio import shared_transcripts
from tests.text import word_error_rate
from transports.wav import load_wav

QUESTIONS = [
    "What is the capital of Japan?",
    "How many legs does a spider have?",
    "Tell me a short story about a dragon who learns to fly.",
]


def text_of(model: WindowedWhisper, audio: np.ndarray, **kwargs) -> str:
    segments, _ = model.transcribe(audio.astype(np.float32) / 32768.0, language="en", **kwargs)
    return " ".join(s.text.strip() for s in segments)


def test_a_repeat_of_the_beginning_is_found():
    assert trailing_repeat_start([1, 2, 3, 4, 1, 2]) == 4
    assert trailing_repeat_start([1, 2, 3, 4, 1, 2, 3, 4]) == 4
    assert trailing_repeat_start([1, 2, 3, 4, 5]) is None
    # "ask ... ask" is speech, not a loop: a repeat must run to the end of the text.
    assert trailing_repeat_start([9, 1, 2, 9, 3, 4]) is None


@pytest.mark.parametrize("question", QUESTIONS)
def test_short_window_hears_what_the_stock_window_hears(models, speech, question):
    windowed = WindowedWhisper(models.whisper)
    stock = WindowedWhisper(models.whisper, window_secs=0)
    audio = speech(question)
    short_text, stock_text = text_of(windowed, audio), text_of(stock, audio)
    assert (windowed.windowed_runs, windowed.fallbacks) == (1, 0)
    assert stock.windowed_runs == 0
    assert word_error_rate(question, short_text) <= 0.2, short_text
    assert word_error_rate(question, short_text) <= word_error_rate(question, stock_text) + 0.15


def test_real_recordings_through_the_short_window(shared_audio, models):
    windowed = WindowedWhisper(models.whisper)
    errors = words = 0
    for name, reference in shared_transcripts():
        hypothesis = text_of(windowed, load_wav(shared_audio / name, 16000))
        n = len(reference.split())
        errors += round(word_error_rate(reference, hypothesis) * n)
        words += n
    n = len(shared_transcripts())
    # Most go through the short window; one it is unsure of may go to the 30 s window.
    assert windowed.windowed_runs + windowed.fallbacks == n and windowed.windowed_runs >= n - 1, (
        windowed.windowed_runs, windowed.fallbacks)
    assert errors / words <= 0.15, f"{errors} errors in {words} words"


def test_an_unsure_decode_falls_back_to_the_stock_window(models, speech, monkeypatch):
    monkeypatch.setattr(whisper_window, "MIN_AVG_LOGPROB", 0.0)  # no decode is that sure
    windowed = WindowedWhisper(models.whisper)
    text = text_of(windowed, speech(QUESTIONS[1]))
    assert (windowed.windowed_runs, windowed.fallbacks) == (0, 1)
    assert word_error_rate(QUESTIONS[1], text) <= 0.2, text


def test_an_unsure_draft_keeps_the_short_windows_words(models, speech, monkeypatch):
    """An interim (a draft for the page) never pays for the 30 s window."""
    monkeypatch.setattr(whisper_window, "MIN_AVG_LOGPROB", 0.0)  # no decode is that sure
    windowed = WindowedWhisper(models.whisper)
    audio = speech(QUESTIONS[1]).astype(np.float32) / 32768.0
    [segment], _ = windowed.transcribe(audio, language="en", draft=True)
    assert (windowed.windowed_runs, windowed.fallbacks) == (1, 0)
    assert word_error_rate(QUESTIONS[1], segment.text) <= 0.2, segment.text
    assert not segment.trusted  # so the final transcript takes the 30 s window instead
    assert text_of(windowed, speech(QUESTIONS[1]), stock=True)
    assert (windowed.windowed_runs, windowed.fallbacks) == (1, 1)


def test_a_runaway_draft_is_no_text(models, speech, monkeypatch):
    monkeypatch.setattr(whisper_window, "TOKENS_PER_SEC", 0)
    monkeypatch.setattr(whisper_window, "TOKENS_MIN", 3)
    windowed = WindowedWhisper(models.whisper)
    assert text_of(windowed, speech(QUESTIONS[0]), draft=True) == ""
    assert (windowed.windowed_runs, windowed.fallbacks) == (0, 0)


def test_a_runaway_decode_falls_back_to_the_stock_window(models, speech, monkeypatch):
    # A token budget of 3 cannot hold the question: the decode fills it, as a looping
    # decode would, and the stock window transcribes instead.
    monkeypatch.setattr(whisper_window, "TOKENS_PER_SEC", 0)
    monkeypatch.setattr(whisper_window, "TOKENS_MIN", 3)
    windowed = WindowedWhisper(models.whisper)
    text = text_of(windowed, speech(QUESTIONS[0]))
    assert (windowed.windowed_runs, windowed.fallbacks) == (0, 1)
    assert word_error_rate(QUESTIONS[0], text) <= 0.2, text


def test_audio_longer_than_any_window_goes_the_stock_way(models, speech):
    windowed = WindowedWhisper(models.whisper)
    question = speech(QUESTIONS[2])
    gap = np.zeros(16000 * 2, dtype=np.int16)
    long_audio = np.concatenate([question, gap] * 8)[: 16000 * 31]
    text = text_of(windowed, long_audio)
    assert windowed.windowed_runs == 0 and windowed.fallbacks == 0
    assert "dragon" in text.lower()


def test_a_vocabulary_prompt_spells_the_names_and_keeps_every_word(models):
    """WHISPER_VOCABULARY: the knowledge base's names as Whisper's prompt, on the short window."""
    from bench import voices
    from bot.tools.knowledge import DEFAULT_KNOWLEDGE_DIR, KnowledgeBase

    if not voices.get("flite-slt").available():
        pytest.skip("flite is not installed (`make test` installs it)")
    audio = voices.synthesize("Who is the CEO of Brightline Telecom?", "flite-slt")
    vocabulary = KnowledgeBase.shared(DEFAULT_KNOWLEDGE_DIR).vocabulary()
    windowed = WindowedWhisper(models.whisper)
    # As the eager passes transcribe: on the short window, even when unsure.
    plain = text_of(windowed, audio, draft=True)
    prompted = text_of(windowed, audio, vocabulary=vocabulary, draft=True)
    assert (windowed.windowed_runs, windowed.fallbacks) == (2, 0)
    assert "Brightline" not in plain, plain  # an unfamiliar name, heard as two words
    assert "Brightline" in prompted and prompted.lower().rstrip("?. ").endswith("telecom"), prompted
