"""Local STT (faster-whisper tiny.en, greedy) on real human speech."""

import pytest

from tests.support.audio import shared_transcripts, transcribe
from tests.text import normalise, word_error_rate
from transports.wav import load_wav


@pytest.mark.parametrize("name,reference", shared_transcripts() or [("-", "-")])
async def test_each_real_recording_is_transcribed(shared_audio, settings, models, name, reference):
    hypothesis = await transcribe(settings, models, load_wav(shared_audio / name, 16000))
    wer = word_error_rate(reference, hypothesis)
    assert wer <= 0.25, f"{name}: WER {wer:.0%}\n  ref: {reference}\n  hyp: {normalise(hypothesis)}"


async def test_real_recordings_overall_wer(shared_audio, settings, models):
    errors = words = 0
    for name, reference in shared_transcripts():
        hypothesis = await transcribe(settings, models, load_wav(shared_audio / name, 16000))
        n = len(normalise(reference).split())
        errors += round(word_error_rate(reference, hypothesis) * n)
        words += n
    assert words > 0
    assert errors / words <= 0.15, f"{errors} errors in {words} words"
