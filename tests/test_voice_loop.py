"""The whole voice loop, local stack, through a real Pipecat transport fed from WAV audio."""

import numpy as np
import pytest

from bot.conversation import converse
from bot.session import Session
from tests.support.audio import rms, transcribe
from tests.text import contains_words
from transports.file import FileTransportParams, Utterance

pytestmark = pytest.mark.slow

MOMENT_ORDER = (
    "speech_end_at", "vad_stop_at", "stt_final_at", "llm_request_at",
    "llm_first_output_at", "tts_first_audio_at", "bot_audio_out_at",
)


async def test_spoken_question_gets_a_spoken_answer(settings, models, speech, tmp_path):
    session = Session(settings=settings, models=models)
    script = [Utterance(audio=speech("What is the capital of France?"), name="question")]
    result = await converse(script, session, FileTransportParams(fast=True))

    turns = result.turn_dicts()
    assert len(turns) == 1, turns
    turn = turns[0]
    assert contains_words(turn["user_text"], "capital", "France"), turn
    assert contains_words(turn["bot_text"], "Paris"), turn
    assert not turn["interrupted"]

    # Every stage of the turn was timed, in the order the data flowed.
    for stage in ("vad", "stt", "turn", "llm_ttft", "tts_ttfb", "voice_to_voice"):
        assert stage in turn["stages_ms"], turn
    assert "barge_in_stop" not in turn["stages_ms"]
    moments = result.turns[0].moments()
    times = [moments[name] for name in MOMENT_ORDER]
    assert times == sorted(times), dict(zip(MOMENT_ORDER, times))

    # The bot's audio is speech that says the answer.
    result.write_audio(tmp_path / "reply.wav")
    result.write_transcript(tmp_path / "turns.jsonl")
    audio = bytes(result.transport.bot_audio)
    assert rms(audio) > 300
    rate = result.transport.output_sample_rate
    import soxr

    heard = await transcribe(settings, models,
                             soxr.resample(np.frombuffer(audio, np.int16), rate, 16000))
    assert contains_words(heard, "Paris"), heard
    assert (tmp_path / "turns.jsonl").read_text().count("\n") == 1


async def test_barge_in_stops_the_answer_and_the_new_question_is_answered(settings, models, speech):
    session = Session(settings=settings, models=models)
    script = [
        Utterance(audio=speech("Please explain in detail how photosynthesis works in plants."),
                  name="long"),
        # Barge in one second into the answer (counted in bot audio played).
        Utterance(audio=speech("What is the capital of France?"), name="interrupt",
                  after_bot_audio=1.0),
    ]
    result = await converse(script, session, FileTransportParams(fast=False))
    playback = result.transport.playback

    turns = result.turn_dicts()
    assert len(turns) == 2, turns
    first, second = turns
    assert first["interrupted"], first
    assert "barge_in_stop" in first["stages_ms"], first
    assert playback.interruptions >= 1
    # Once the interruption reached the output, at most the audio frame already being
    # played went out: bounded in frames, not wall-clock.
    assert playback.frames_after_interruption <= 2, playback
    assert first["audio_after_interruption_ms"] <= 2 * 40, first
    assert contains_words(second["user_text"], "capital", "France"), second
    assert contains_words(second["bot_text"], "Paris"), second
    assert not second["interrupted"]
