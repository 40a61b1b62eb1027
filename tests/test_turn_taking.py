"""Turn-taking in the local voice loop, real audio both ways: what the user says over the bot.

The bot gives a long, fixed answer (a stand-in LLM, tests/support/fakes.py), spoken by Piper;
the user's voice is a synthesizer the bot has never heard (bench/voices.py). Whisper, the
VAD, the turn strategies, the echo canceller and the speech gate are the real ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import UserBackchannelFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed

from bench import voices
from bot.conversation import converse
from bot.session import Session
from tests.support.audio import transcribe
from tests.support.fakes import FakeProviders
from tests.support.settings import local_settings
from tests.text import contains_words, word_error_rate
from transports.file import FileTransportParams, Utterance

pytestmark = pytest.mark.slow

# One keyword per sentence, so what the bot said (and said again) can be told apart.
ANSWER = (
    "Plants make their food in the leaves, by photosynthesis. "
    "The chlorophyll in each leaf catches the energy of sunlight and keeps it. "
    "Water from the roots and carbon dioxide from the air become sugar. "
    "Oxygen is what the plant gives back to the air around it."
)
GREETING = "Hi! I'm listening. Ask me anything."


def settings_for(**overrides):
    return local_settings(**overrides)


class Frames(BaseObserver):
    """The frames of some types that moved in the session, each counted once."""

    def __init__(self, *types):
        super().__init__()
        self.types, self.seen = types, {}

    async def on_push_frame(self, data: FramePushed):
        if isinstance(data.frame, self.types):
            self.seen[data.frame.id] = data.frame

    def of(self, cls) -> list:
        return [f for f in self.seen.values() if isinstance(f, cls)]


def say(text: str, voice: str) -> np.ndarray:
    return voices.synthesize(text, voice)


async def bot_heard(settings, models, result, start: int = 0, end: int | None = None) -> str:
    """What the bot's audio says (from byte `start` to `end` of it), as Whisper hears it."""
    audio = np.frombuffer(bytes(result.transport.bot_audio[start:end]), dtype=np.int16)
    rate = result.transport.output_sample_rate
    return await transcribe(settings, models, soxr.resample(audio, rate, 16000).astype(np.int16))


async def talk(models, script, settings=None, greeting="", observers=(), answer=ANSWER, **params):
    session = Session(settings=settings or settings_for(), models=models, greeting=greeting,
                      providers=FakeProviders("llm", answer=answer))
    session.observers = list(observers)
    return await converse(script, session, FileTransportParams(**params))


async def test_a_backchannel_does_not_stop_the_bot(settings, models):
    frames = Frames(UserBackchannelFrame)
    script = [
        Utterance(audio=say("Can you explain photosynthesis to me?", "flite-rms"), name="question"),
        Utterance(audio=say("Okay.", "flite-slt"), name="backchannel", after_bot_audio=2.0,
                  reply_expected=False),
    ]
    result = await talk(models, script, observers=[frames], tail_secs=1.0)
    turns = result.turn_dicts()
    assert len(turns) == 1, turns
    assert not turns[0]["interrupted"] and turns[0]["bot_text"] == ANSWER, turns
    # Reported as a backchannel, however the recogniser punctuated it ("Okay." or "Okay").
    said = [f.text.strip(" .!,").lower() for f in frames.of(UserBackchannelFrame)]
    assert said == ["okay"], frames.seen
    # Never cut off once it spoke (a sentence said again is a cut too), and on to the end.
    assert not any(result.transport.playback.cut_offsets), result.transport.playback
    heard = (await bot_heard(settings, models, result)).lower()
    assert contains_words(heard, "oxygen"), heard


async def test_stop_stops_the_bot(models):
    script = [
        Utterance(audio=say("Can you explain photosynthesis to me?", "flite-slt"), name="question"),
        Utterance(audio=say("Stop.", "flite-awb"), name="stop", after_bot_audio=2.0),
    ]
    result = await talk(models, script)
    turns = result.turn_dicts()
    assert len(turns) == 2 and turns[0]["interrupted"], turns
    assert contains_words(turns[1]["user_text"], "stop"), turns
    assert "barge_in_stop" in turns[0]["stages_ms"], turns


async def test_speech_right_after_a_barge_in_is_heard_and_answered(models):
    """"Wait." over the answer, then at once a question: the bot stops, and the question
    that follows the barge-in is heard whole and answered to the end."""
    script = [
        Utterance(audio=say("Can you explain photosynthesis to me?", "flite-slt"), name="question"),
        Utterance(
            audio=np.concatenate(
                [say("Wait.", "flite-awb"), np.zeros(int(0.3 * voices.SAMPLE_RATE), np.int16),
                 say("What is the capital of Spain?", "flite-awb")]
            ),
            name="wait, then a question",
            after_bot_audio=2.0,
        ),
    ]
    result = await talk(models, script, tail_secs=1.0)
    turns = result.turn_dicts()
    assert len(turns) >= 2 and turns[0]["interrupted"], turns
    assert contains_words(" ".join(t["user_text"] for t in turns[1:]), "capital", "Spain"), turns
    last = turns[-1]
    assert contains_words(last["user_text"], "Spain"), turns
    assert last["bot_text"] == ANSWER and not last["interrupted"], turns


async def test_a_sound_without_words_resumes_the_interrupted_sentence(settings, models):
    """A mumble (the VAD hears a voice, Whisper no words) over the first sentence: the bot
    says that sentence again and goes on to the end, with no apology and no new turn."""
    mumble = voices.muffled(say("Hmm let me think about it", "flite-rms"))
    script = [
        Utterance(audio=say("Can you explain photosynthesis to me?", "flite-slt"), name="question"),
        Utterance(audio=mumble, name="mumble", after_bot_audio=1.5, reply_expected=False),
    ]
    result = await talk(models, script, tail_secs=1.0)
    turns = result.turn_dicts()
    assert len(turns) == 1, turns
    # Heard apart, the two sides of the cut: Whisper hearing them together merges the
    # sentence said twice ("plants make their food, in the leaf, in the leaves, ...").
    cut = result.transport.playback.cut_offsets[-1]
    before = await bot_heard(settings, models, result, end=cut)
    after = (await bot_heard(settings, models, result, start=cut)).lower()
    assert contains_words(before, "plants") and "chlorophyll" not in before.lower(), before
    words = after.split()
    assert contains_words(" ".join(words[:3]), "plants"), after  # the first sentence, again
    assert contains_words(after, "leaves", "oxygen"), after  # ... and on to the end
    assert "catch that" not in after, after


async def test_the_bots_own_echo_does_not_interrupt_it(settings, models):
    """Without headphones: the whole answer comes back at -10 dB, 150 ms late."""
    script = [
        Utterance(audio=say("Can you explain photosynthesis to me?", "flite-rms"), name="question")
    ]
    result = await talk(models, script, echo_gain_db=-10, tail_secs=2.0)
    turns = result.turn_dicts()
    assert len(turns) == 1 and not turns[0]["interrupted"] and turns[0]["bot_text"] == ANSWER, turns
    heard = await bot_heard(settings, models, result)
    # Said once and whole: a sentence said again would add 9-13 words to the answer's 46
    # (19 % and more); Whisper's slips on Piper's voice cost a few ("in the leads,
    # bifodocynthesis").
    assert word_error_rate(ANSWER, heard) < 0.15 and contains_words(heard, "oxygen"), heard


async def test_a_question_over_the_greeting_is_answered(models):
    """Asked over the greeting, its echo in the microphone: heard and answered.

    At 2.0 s, over the greeting's last words, after the canceller has found the echo path
    (~1.2 s in). Asked at 1.3 s, while AEC3 first settles on that path, the question was
    misheard in 2 of 18 runs here ("I'm Lissa Roddis, the capital of France."): the raw
    microphone that goes on where AEC3 cut the voice (its level kept: tests/test_echo_cancel.py,
    settling test) carries the greeting's echo with it. That shortfall is measured in
    bench/RESULTS.md, "A question over the greeting"; a test cannot hold it to one timing.
    Not espeak-us-f: Whisper tiny.en hears its "France" as "friends" in 5 of 7 contexts
    (trimmed, padded, over echo), the echo aside, so the test flipped with timing."""
    script = [
        Utterance(
            audio=say("What is the capital of France?", "flite-rms"), name="question", at=2.0
        ),
    ]
    result = await talk(
        models,
        script,
        greeting=GREETING,
        echo_gain_db=-15,
        lead_in_secs=0.3,
        answer_timeout_secs=30,
    )
    turns = result.turn_dicts()
    assert result.transport.playback.bot_starts >= 2, "the greeting, then the answer"
    assert len(turns) == 1, turns
    assert contains_words(turns[0]["user_text"], "capital", "France"), turns
    assert turns[0]["bot_text"] == ANSWER, turns


async def test_a_request_over_the_greeting_ends_its_turn_without_the_watchdog(models):
    """A request (no "?": its turn waits for the speaker's pause) as the greeting begins, whose
    turn starts late, on its words, once the bot has held its greeting: its turn still ends
    on the pause rule, not on the user aggregator's stop watchdog (USER_TURN_STOP_TIMEOUT)."""
    script = [
        Utterance(
            audio=say("Explain how airplanes are able to fly.", "flite-rms"), name="request", at=0.3
        ),
    ]
    settings = settings_for(user_turn_stop_timeout=10.0)
    result = await talk(models, script, settings=settings, greeting=GREETING, echo_gain_db=-10,
                        lead_in_secs=0.3, answer_timeout_secs=30)
    turns = result.turn_dicts()
    # Its turn (its last words: the first, over the -10 dB greeting, are now and then
    # garbled, "Explain now your planes…": counted in bench/RESULTS.md, not this test's topic).
    assert len(turns) == 1 and contains_words(turns[0]["user_text"], "able", "fly"), turns
    # The pause rule waits at most a second (plus 0.4 s if a voice seems to come back).
    assert turns[0]["stages_ms"]["turn"] < 5000, turns


async def test_a_question_over_the_end_of_an_answer_is_answered(models):
    """The next question starts while the bot says its last words: heard whole, answered."""
    short = "Paris is the capital of France."
    script = [
        Utterance(audio=say("What is the capital of France?", "flite-slt"), name="first"),
        Utterance(
            audio=say("And what is the capital of Spain?", "flite-awb"),
            name="next",
            after_bot_audio=1.4,
        ),
    ]
    result = await talk(models, script, answer=short)
    turns = result.turn_dicts()
    assert len(turns) == 2, turns
    assert contains_words(turns[1]["user_text"], "capital", "Spain"), turns
    assert turns[1]["bot_text"] == short, turns


@pytest.mark.parametrize("voice", ["flite-slt", "espeak-rp-slow"])
async def test_a_question_with_comma_pauses_is_one_turn(models, voice):
    """Half-second pauses at its commas (longer than the VAD's stop): still one question."""
    question = "Tell me a long, detailed story, about the history of Paris."
    script = [Utterance(audio=voices.with_pauses(question, voice, 0.45), name="paused")]
    # A short answer: a clause cut off at a pause would come as a second turn all the same.
    result = await talk(models, script, answer="Paris began as a fishing village on the Seine.")
    turns = result.turn_dicts()
    assert len(turns) == 1, turns
    # The first clause and the last in it (however the recogniser spells the first in a voice
    # it mishears: "Tell me a long" came back as "I'm out"): the 11 words, not the last 5.
    heard = turns[0]["user_text"]
    assert contains_words(heard, "Paris") and len(heard.split()) >= 8, turns


async def test_a_quiet_user_is_checked_in_on_once_then_the_session_ends(settings, models):
    """USER_IDLE_SECS after the answer the bot asks once, USER_IDLE_END_SECS later it says
    goodbye and ends the session (the script's long tail of silence never runs out)."""
    quiet = settings_for(user_idle_secs=2.0, user_idle_end_secs=2.0)
    script = [Utterance(audio=say("What is the capital of France?", "flite-slt"), name="question")]
    result = await talk(models, script, settings=quiet, answer="Paris.", tail_secs=30.0)
    heard = (await bot_heard(settings, models, result)).lower()
    assert heard.count("still there") == 1, heard
    assert "goodbye" in heard, heard
    assert len(result.turn_dicts()) == 1


async def test_with_idle_check_ins_off_a_quiet_user_is_left_alone(settings, models):
    quiet = settings_for(user_idle_secs=0.0)
    script = [Utterance(audio=say("What is the capital of France?", "flite-slt"), name="question")]
    result = await talk(models, script, settings=quiet, answer="Paris.", tail_secs=6.0)
    heard = (await bot_heard(settings, models, result)).lower()
    assert "still there" not in heard and "goodbye" not in heard, heard
