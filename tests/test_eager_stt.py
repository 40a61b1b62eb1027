"""Whisper transcribing while the user speaks: interim text, and a final ready at the stop."""

import numpy as np
import pytest
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.tests.utils import run_test

from bot.conversation import converse
from bot.local.eager_whisper import EAGER_PASS
from bot.session import Session
from bot.providers import create_stt
from tests.text import contains_words
from transports.file import FileTransportParams, Utterance

pytestmark = pytest.mark.slow
FRAME = 320  # 20 ms at 16 kHz


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


async def test_interim_transcripts_while_the_user_speaks_and_the_answer(settings, models, speech):
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
    assert contains_words(result.turn_dicts()[-1]["bot_text"], "Paris"), [
        str(t) for t in result.turns
    ]


async def test_the_pass_started_at_the_pause_is_the_final_transcript(
    settings, models, speech, monkeypatch
):
    """Frame by frame, so the outcome does not hang on the machine's load: the pass that
    starts when the audio falls quiet hears the whole question and becomes the final."""
    from bot.local import eager_whisper

    # On a busy machine a pause may find its passes all taken (a plain transcription
    # then): here every pause gets its pass.
    monkeypatch.setattr(eager_whisper, "MAX_PASSES", 64)
    stt = create_stt(settings, models)
    assert isinstance(stt, eager_whisper.EagerWhisperSTTService)
    question = speech(
        "Please tell me which city is the capital of France and what it is famous for."
    )
    quiet = np.zeros(FRAME * 15, dtype=np.int16)  # 300 ms: the pause, then the VAD's stop
    audio = np.concatenate([question, quiet, np.zeros(-len(question) % FRAME, dtype=np.int16)])
    chunks = [
        InputAudioRawFrame(audio[i : i + FRAME].tobytes(), sample_rate=16000, num_channels=1)
        for i in range(0, len(audio), FRAME)
    ]
    down, _ = await run_test(
        stt,
        frames_to_send=[
            VADUserStartedSpeakingFrame(),
            *chunks,
            VADUserStoppedSpeakingFrame(stop_secs=0.2),
        ],
    )
    (final,) = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert contains_words(final.text, "capital", "France"), final.text
    assert final.result["source"] == EAGER_PASS, (
        "transcribed again at the stop, not taken from the pass")


async def test_an_unsure_eager_pass_is_shown_but_the_final_comes_from_the_30_s_window(
    settings, models, speech, monkeypatch
):
    from bot.local import whisper_window

    monkeypatch.setattr(whisper_window, "MIN_AVG_LOGPROB", 0.0)  # no decode is that sure
    transcripts = Transcripts()
    session = Session(settings=settings, models=models, observers=[transcripts])
    question = "Please tell me which city is the capital of France and what it is famous for."
    await converse([Utterance(audio=speech(question))], session, FileTransportParams())

    # The drafts still reach the page: an interim never waits for the 30 s window.
    assert transcripts.interim and all(text.strip() for text in transcripts.interim), (
        transcripts.interim
    )
    assert transcripts.final, "a final transcript"
    heard = " ".join(final.text for final in transcripts.final)
    assert contains_words(heard, "capital", "France"), heard
    assert all(final.result["source"] != EAGER_PASS for final in transcripts.final), (
        "an unsure pass became final"
    )


def test_a_draft_the_30s_window_found_no_words_in_is_kept_when_long_or_an_interrupt_word():
    from bot.local.eager_whisper import draft_is_kept

    interrupt = frozenset({"wait", "stop", "hold on"})
    assert draft_is_kept("on what is chlorophyll.", interrupt)
    assert draft_is_kept("wait", interrupt) and draft_is_kept("Hold on.", interrupt)
    assert not draft_is_kept("I'm not.", interrupt)  # "Uh-huh." misheard
    assert not draft_is_kept("", interrupt)
