"""The adaptive VAD against the fixed one, in rooms where the fixed bar is wrong."""

import pytest
from pipecat.audio.vad.vad_analyzer import VADParams

from bench.adaptive_vad import ROOMS, room_audio, vad_run
from bench import voices
from bot.config import Settings
from bot.local.models import LocalModels
from bot.local.silero_vad import SharedSileroVADAnalyzer
from bot.turns.adaptive_vad import AdaptiveVADAnalyzer

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Tell me a joke please.",
]


@pytest.fixture(scope="module")
def silero():
    return LocalModels(Settings(_env_file=None))


def heard(silero, cls, room):
    spec = ROOMS[room]
    audio, spans = room_audio(
        QUESTIONS, voices.UNFAMILIAR[:3], spec["level"], spec["kind"], spec["snr"]
    )
    analyzer = cls(session=silero.silero_session, params=VADParams())
    starts, _ = vad_run(analyzer, audio)
    return sum(any(a - 0.2 <= s <= b + 0.5 for s in starts) for a, b in spans), analyzer


def test_a_soft_voice_in_a_quiet_room_is_heard(silero):
    room = "quiet room, soft voice (-52 dBFS)"
    assert heard(silero, SharedSileroVADAnalyzer, room)[0] == 0  # the fixed bar is too high
    assert heard(silero, AdaptiveVADAnalyzer, room)[0] == len(QUESTIONS)


def test_in_a_chattering_cafe_the_bar_rises_and_each_question_starts_speech(silero):
    """Once the chatter has been heard as long as no one speaks without a pause
    (`endless_speech_secs`), the bar is over it: every later question starts speech. (One
    asked in the first seconds of a session that opens in chatter can be missed.)"""
    found, analyzer = heard(silero, AdaptiveVADAnalyzer, "café (chatter, 10 dB SNR)")
    assert analyzer.params.min_volume > VADParams().min_volume + 0.1
    assert found >= len(QUESTIONS) - 1  # the first question comes 3 s into the chatter


def test_a_user_speaking_on_does_not_raise_the_bar_over_their_own_voice(silero):
    """Seconds of the user's own speech with short pauses are not the room: the bar stays
    where the quiet room put it, and every sentence after a pause still starts speech."""
    import numpy as np

    sentences = [
        "Please tell me which city is the capital of France.",
        "And then tell me how many people live there today.",
        "And why so many visitors go there every year.",
        "What is the largest planet in our solar system?",
    ]
    rate, pause = 16000, np.zeros(int(0.45 * 16000), dtype=np.int16)
    track, spans, t = [np.zeros(rate, dtype=np.int16)], [], 1.0
    for text in sentences:
        speech = voices.synthesize(text, "flite-slt")
        spans.append((t, t + len(speech) / rate))
        track += [speech, pause]
        t += (len(speech) + len(pause)) / rate
    analyzer = AdaptiveVADAnalyzer(session=silero.silero_session, params=VADParams())
    starts, _ = vad_run(analyzer, np.concatenate(track))
    assert analyzer.params.min_volume < 0.75, analyzer.noise_floor
    assert all(any(a - 0.2 <= s <= a + 0.6 for s in starts) for a, b in spans), (starts, spans)


def test_over_the_bot_speech_starts_sooner(silero):
    """Where a start only pauses the bot until the words are known (bot/turns/barge_in.py), the
    VAD starts on VAD_START_SECS_OVER_BOT of speech: the bot stops talking over the user
    ~0.1 s sooner. Elsewhere it waits VAD_START_SECS, as a turn's start costs more."""
    settings = Settings(_env_file=None)
    audio, _ = room_audio(QUESTIONS, voices.UNFAMILIAR[:3], -26.0, "white", 30.0)

    def starts(over_bot: bool) -> list[float]:
        analyzer = AdaptiveVADAnalyzer(
            session=silero.silero_session,
            params=VADParams(start_secs=settings.vad_start_secs),
            start_secs_over_bot=settings.vad_start_secs_over_bot,
            over_bot=lambda: over_bot,
        )
        return vad_run(analyzer, audio)[0]

    sooner, later = starts(True), starts(False)
    assert len(sooner) == len(later) == len(QUESTIONS), (sooner, later)
    earlier_by = settings.vad_start_secs - settings.vad_start_secs_over_bot
    for a, b in zip(sooner, later):
        assert b - a == pytest.approx(earlier_by, abs=0.04), (sooner, later)
