"""Whisper transcribing while the user speaks: interim text, and a final ready at the stop."""

import pytest
from pipecat.frames.frames import InterimTranscriptionFrame, TranscriptionFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed

from bot.conversation import converse
from bot.eager_whisper import EAGER_RESULT
from bot.pipeline import Session
from tests.text import contains_words
from transports.file import FileTransportParams, Utterance

pytestmark = pytest.mark.slow


class Transcripts(BaseObserver):
    def __init__(self):
        super().__init__()
        self.interim, self.final = [], []

    async def on_push_frame(self, data: FramePushed):
        if not data.first_push:
            return
        if isinstance(data.frame, InterimTranscriptionFrame):
            self.interim.append(data.frame.text)
        elif isinstance(data.frame, TranscriptionFrame):
            self.final.append(data.frame)


@pytest.fixture
def stt_log():
    """The eager STT's own log lines (DEBUG) during the test."""
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG",
                      filter=lambda r: r["name"] in ("bot.eager_whisper", "bot.whisper_window"))
    yield lines
    logger.remove(sink)


async def test_interim_transcripts_and_a_final_from_the_eager_pass(settings, models, speech, stt_log):
    transcripts = Transcripts()
    session = Session(settings=settings, models=models, observers=[transcripts])
    # Long and without commas: Piper pauses at a comma, and the VAD would end the segment.
    question = "Please tell me which city is the capital of France and what it is famous for."
    result = await converse([Utterance(audio=speech(question))], session, FileTransportParams())

    assert transcripts.interim, "interim transcripts while the user was speaking"
    assert all(text.strip() for text in transcripts.interim), transcripts.interim
    # A pause the VAD takes for a stop may split the question into more than one final.
    assert transcripts.final, "a final transcript"
    heard = " ".join(final.text for final in transcripts.final)
    assert contains_words(heard, "capital", "France"), heard
    final = transcripts.final[-1]
    # Spoken in real time, the pause after the last word starts a pass that hears it all:
    # its words are the final transcript, unless the service said why not (a busy machine
    # with two passes still running; a pass the short window was unsure of).
    if final.result != EAGER_RESULT:
        why = [line for line in stt_log if "passes still running" in line or "unsure of the eager pass" in line]
        assert why, f"the final transcript did not come from the eager pass: {stt_log}"
    assert contains_words(result.turn_dicts()[-1]["bot_text"], "Paris"), [str(t) for t in result.turns]


async def test_an_unsure_eager_pass_is_shown_but_the_final_comes_from_the_30_s_window(
    settings, models, speech, monkeypatch
):
    from bot import whisper_window

    monkeypatch.setattr(whisper_window, "MIN_AVG_LOGPROB", 0.0)  # no decode is that sure
    transcripts = Transcripts()
    session = Session(settings=settings, models=models, observers=[transcripts])
    question = "Please tell me which city is the capital of France and what it is famous for."
    await converse([Utterance(audio=speech(question))], session, FileTransportParams())

    # The drafts still reach the page: an interim never waits for the 30 s window.
    assert transcripts.interim and all(text.strip() for text in transcripts.interim), transcripts.interim
    assert transcripts.final, "a final transcript"
    heard = " ".join(final.text for final in transcripts.final)
    assert contains_words(heard, "capital", "France"), heard
    assert all(final.result != EAGER_RESULT for final in transcripts.final), "an unsure pass became final"
