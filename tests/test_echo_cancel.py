"""The echo canceller on real speech: the bot's echo goes, the user's voice stays.

The bot (one synthetic voice) talks; the microphone hears it back through a small room,
late and quieter, and the user (another voice) talks over it. Frames reach the canceller on
a simulated clock as they would from a client: the bot's audio as the output sent it, the
microphone's 20 ms frames as they arrive.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import voices
from tests.support.echo_call import (
    BOT,
    RATE,
    USER,
    call,
    dbfs,
    room_echo,
    speech_starts,
)


@pytest.mark.parametrize("echo_db,delay_secs", [(-10, 0.2), (-20, 0.35), (-10, 0.8)])
def test_the_bots_echo_is_cancelled(echo_db, delay_secs):
    """Including a path longer than AEC3 follows by itself (0.8 s: network, playout buffer)."""
    mic, out, canceller, _ = call(echo_db, delay_secs)
    assert canceller.echo_present
    assert abs(canceller.echo_delay_ms - 1000 * delay_secs) <= 100, canceller.echo_delay_ms
    late = slice(int(6 * RATE), int(11 * RATE))  # once it has heard a few seconds of the bot
    assert dbfs(mic[late]) - dbfs(out[late]) >= 20, (dbfs(mic[late]), dbfs(out[late]))
    # The VAD hears the echo in the raw microphone, and nothing once it is cancelled.
    assert len(speech_starts(mic[late])) >= 1
    assert speech_starts(out[late]) == []


# Known by the end of the bot's first 1.25 s of speech; held after 0.6 s for 1.2 s, by the
# end of its second 0.6 s (the bot started at 0.5 s).
@pytest.mark.parametrize("held_secs,known_by", [(0.0, 0.5 + 1.25), (1.2, 0.5 + 0.6 + 1.2 + 0.6)])
def test_the_echo_is_known_within_the_bots_first_second(held_secs, known_by):
    """Until it is, every residual the VAD hears early in an answer holds the bot and is
    judged by its garbled transcript; and a bot held that way must not keep it unknown."""
    canceller = call(-20, 0.15, held_secs=held_secs)[2]
    assert canceller.present[int(known_by / 0.02)], np.argmax(canceller.present) * 0.02


@pytest.mark.parametrize("bot_voice", ["flite-awb", "espeak-us-f"])
def test_the_echo_is_known_while_the_user_talks_over_it(bot_voice):
    """A question from the bot's first words on (over the greeting): the voice over the echo
    keeps each peak of the correlation under the sharp bar, but at one lag estimate after
    estimate. Known before the question ends (1.74 s), not after it (2.5-2.7 s, when two
    sharp peaks in a row were the only proof), so its end is already cancelled."""
    bot = voices.synthesize(BOT, bot_voice)
    mic, out, canceller, user = call(-15, 0.15, bot=bot, user_at=0.6, user_dbfs=-20)
    frame = int(0.02 * RATE)
    assert canceller.present[user.stop // frame - 1], np.argmax(canceller.present) * 0.02


def test_the_user_is_heard_over_the_echo():
    mic, out, canceller, user = call(-20, 0.2, user_at=7.0)
    assert canceller.echo_present
    starts = speech_starts(out)
    assert any(user.start / RATE - 0.1 <= t <= user.stop / RATE for t in starts), starts
    assert all(user.start / RATE - 0.1 <= t <= user.stop / RATE + 0.5 for t in starts if t > 6), (
        starts
    )
    # Not cancelled away with the echo: most of the user's voice is still there.
    assert dbfs(out[user]) >= dbfs(mic[user]) - 10, (dbfs(mic[user]), dbfs(out[user]))


@pytest.mark.parametrize("echo_db,user_dbfs", [(-20, -30), (-10, -25)])
def test_a_voice_is_told_from_what_is_left_of_the_echo(echo_db, user_dbfs):
    """What the barge-in logic asks before it pauses the bot: never yes on the echo alone
    once it is cancelled, yes within the user's question."""
    mic, out, canceller, user = call(echo_db, 0.2, user_at=7.0, user_dbfs=user_dbfs)
    frame = int(0.02 * RATE)
    during = canceller.voice[user.start // frame : user.stop // frame]
    echo_only = canceller.voice[int(4.0 * RATE) // frame : user.start // frame]
    assert during.any()
    assert not echo_only.any()


def test_while_aec3_settles_the_bots_own_voice_is_not_taken_for_the_user(models):
    """The bot's own Piper voice, its echo 10 dB down and 150 ms late (the own-echo test's
    room, tests/test_turn_taking.py): in its first seconds AEC3 leaves a garbled residue that
    stood 21 dB over the residual's floor and passed for a voice over the echo. While the
    canceller settles, the raw microphone must stand over the echo too. A question asked over
    the settling echo is still heard."""
    answer = models.synthesize(
        "Plants make their food in the leaves, by photosynthesis. Sunlight gives them the "
        "energy. Water from the roots and carbon dioxide from the air become sugar.",
        RATE,
    )
    mic, out, canceller, _ = call(-10, 0.15, bot=answer)
    assert canceller.present.any() and not canceller.settled[canceller.present].all()
    assert not canceller.voice[canceller.present & ~canceller.settled].any()
    mic, out, canceller, user = call(-10, 0.15, bot=answer, user_at=4.0, user_dbfs=-20)
    frame = int(0.02 * RATE)
    assert not canceller.settled[user.start // frame]
    assert canceller.voice[user.start // frame : user.stop // frame].any()


def test_a_question_asked_as_soon_as_the_echo_is_known_is_a_voice_at_once(models):
    """Asked 0.1 s after the echo path is found (about 1.5 s into the answer): AEC3 has
    silenced all of the echo so far, so its residue has no floor to measure a voice by. The
    raw microphone decides then; before, the bot talked on over the question until its
    transcript came, and its echo masked the last words ("What is the capital of Franklin?").
    When the path is found depends on the synthesized audio (it moved past a fixed 1.5 s on
    another CPU), so it is read from the echo alone; nothing after that moment changes it."""
    answer = models.synthesize(
        "Plants make their food in the leaves, by photosynthesis. Sunlight gives them the "
        "energy. Water from the roots and carbon dioxide from the air become sugar.",
        RATE,
    )
    frame = int(0.02 * RATE)
    echo_alone = call(-20, 0.15, bot=answer)[2]
    assert echo_alone.present.any()
    known_at = echo_alone.present.argmax() * frame / RATE
    mic, out, canceller, user = call(
        -20, 0.15, bot=answer, user_at=known_at + 0.1, user_dbfs=-20
    )
    first = user.start // frame
    assert canceller.present[first]
    assert canceller.voice[first : first + 15].any()  # within its first 0.3 s
    assert not canceller.voice[canceller.present[:first].argmax() : first].any()


@pytest.mark.parametrize(
    "bot_voice,user_voice,asked_at",
    [("flite-awb", "flite-rms", 1.2), ("flite-awb", "flite-rms", 1.4),
     ("flite-awb", "flite-rms", 1.6), ("espeak-rp-slow", "flite-slt", 1.2)],
)
def test_a_question_over_the_settling_echo_keeps_its_words(bot_voice, user_voice, asked_at):
    """Asked over the greeting around when the echo path is found: AEC3, still settling,
    muted stretches of the question with the echo (live: 0.1 s at a time at -95 dBFS, heard
    as "Epital of France") before the double-talk guard had measured the echo. Where the
    user's voice stands over the echo, the question keeps its level."""
    greeting = voices.synthesize("Hi! I'm listening. Ask me anything.", bot_voice)
    kwargs = dict(bot=greeting, user_dbfs=-22, user_voice=user_voice, after_secs=3.0)
    echo_alone, _, _, _ = call(-10, 0.13, **kwargs)
    mic, out, canceller, user = call(-10, 0.13, user_at=0.5 + asked_at, **kwargs)
    assert canceller.echo_present
    voice_alone = mic.astype(np.float64) - echo_alone
    stretch = RATE // 10
    cut = [
        round(dbfs(mic[i : i + stretch]) - dbfs(out[i : i + stretch]), 1)
        for i in range(user.start, user.stop - stretch, stretch)
        if dbfs(voice_alone[i : i + stretch]) >= max(-35.0, dbfs(echo_alone[i : i + stretch]) + 6)
    ]
    assert len(cut) >= 10 and max(cut) < 8, cut


@pytest.mark.parametrize("echo_db,user_dbfs", [(-10, None), (-20, None), (-10, -22), (-20, -32)])
def test_speech_heard_before_the_echo_was_known_is_judged_once_it_is(echo_db, user_dbfs):
    """The bot's first words come back before anything cancels them: the VAD hears them
    and the bot is held. Once the echo path is known (within the bot's first second), that
    speech is told apart: the echo alone never stands over what the bot's audio explains, a
    voice 8-10 dB over the echo does."""
    # The bot starts at 0.5 s, its echo 0.15 s later; the user, if any, from 0.8 s.
    user_at = None if user_dbfs is None else 0.8
    mic, out, canceller, user = call(
        echo_db, 0.15, user_at=user_at, user_dbfs=user_dbfs or -25.0, ask_over_echo=(0.7, 2.2)
    )
    over = canceller.asked_over_echo
    assert over is not None
    if user_dbfs is None:
        assert over < 10, over
    else:
        assert over >= 10, over


def test_once_the_bots_echo_has_died_away_the_microphone_is_untouched():
    """Asked after the bot's last words have died away: the voice reaches the VAD and the
    recogniser as the microphone had it, the echo still known for the bot's next answer."""
    bot_secs = len(voices.synthesize(BOT, "espeak-rp-slow")) / RATE
    user_at = 0.5 + bot_secs + 0.2 + 1.2  # the bot's start, its speech, the echo's delay
    mic, out, canceller, user = call(-20, 0.2, user_at=user_at, after_secs=4.5)
    assert canceller.echo_present
    np.testing.assert_array_equal(out[user], mic[user])
    # While the bot spoke, its echo was still cancelled.
    late = slice(int(6 * RATE), int(11 * RATE))
    assert dbfs(mic[late]) - dbfs(out[late]) >= 20


def test_with_no_echo_the_microphone_is_untouched():
    """Headphones, or a browser that cancelled it already: nothing to cancel, so nothing is
    (AEC3 alone would suppress the user talking over the bot until it had heard an echo)."""
    mic, out, canceller, user = call(None, 0.2, user_at=2.0, user_dbfs=-30)
    assert not canceller.echo_present
    np.testing.assert_array_equal(out, mic[: len(out)])


def test_an_echo_that_appears_later_is_found_within_seconds():
    """Headphones taken off mid-conversation: the echo path, called absent after the bot's
    first 2 s of speech, is estimated less often from then on (it is most of the canceller's
    CPU where there is no echo), and an echo that appears is still found within 3 s."""
    from processors.echo_path import EchoPath

    bot = voices.synthesize(BOT, "espeak-rp-slow").astype(np.float64)
    played = np.concatenate([bot, bot])
    heard = room_echo(played, -20, 0.2)
    appears = len(bot)
    heard[:appears] = 0.0  # headphones on for the first answer
    heard += np.random.default_rng(1).standard_normal(len(heard)) * 32768 * 10 ** (-70 / 20)
    path = EchoPath()
    found = None
    for i in range(0, len(played) - 159, 160):
        path.add(heard[i : i + 160].astype(np.int16), played[i : i + 160].astype(np.int16))
        if i < appears:
            assert not path.present
        elif path.present and found is None:
            found = (i - appears) / RATE
    assert not path.pending and found is not None and found <= 3.0, found
    assert abs(path.delay_secs - 0.2) <= 0.02, path.delay_secs


@pytest.mark.parametrize("voice", ["flite-slt", "flite-awb"])
def test_a_voice_after_a_narrow_band_bot_sound_is_not_its_echo(voice):
    """With no echo at all, a question that starts soon after the bot's sound ends must not
    be taken for that sound's echo. A tone (the test bots' voice; a chime) has energy in one
    band only: elsewhere its spectrum is its onset and fade, and a phase-only correlation
    there lines those up with the question's onset (10 of 24 such exchanges, before). Bands
    the bot sent nothing in cannot carry its echo, so they do not vote."""
    from processors.echo_path import EchoPath

    n = int(0.54 * RATE)
    tone = np.sin(np.arange(n) * 2 * np.pi * 440 / RATE) * 3000
    fade = np.linspace(0.0, 1.0, RATE // 100)
    tone[: len(fade)] *= fade
    tone[-len(fade) :] *= fade[::-1]
    question = voices.synthesize(USER, voice).astype(np.float64)
    for gap in (0.0, 0.2, 0.4, 0.7):
        silence = np.zeros(int(gap * RATE))
        after = np.zeros(len(question) + RATE // 2)
        played = np.concatenate([np.concatenate([tone, silence, after])] * 5)
        asked = np.concatenate([tone * 0, silence, question, after[len(question) :]])
        heard = np.concatenate([asked] * 5)
        path = EchoPath()
        for i in range(0, len(played) - 159, 160):
            path.add(heard[i : i + 160].astype(np.int16), played[i : i + 160].astype(np.int16))
            assert not path.present, (
                f"{gap} s after the tone: taken for its echo at {i / RATE:.2f} s")


@pytest.mark.parametrize("echo_db", [None, -20, -35])
def test_rnnoise_runs_while_the_bots_echo_may_be_heard_and_only_then(echo_db):
    """The auto denoiser's RNNoise (a millisecond of CPU per frame) is for the echo's
    residue: while the bot speaks, from its first words on where there is an echo, and no
    longer than the bot's first 2 s of speech where there is none (headphones, a browser
    that cancelled it already)."""
    from bot.config import Settings
    from bot.turns.barge_in import BargeIn
    from bot.turns.barge_in_words import BargeInPolicy
    from processors.speech_gate import SpeechGate

    _, _, canceller, _ = call(echo_db, 0.2)
    judge = BargeIn(SpeechGate(), BargeInPolicy.from_settings(Settings(_env_file=None)),
                    echo_tail_secs=0.0, canceller=canceller)
    assert not judge.echo_may_be_heard  # the bot is quiet
    judge.bot_speaking = True
    assert judge.echo_may_be_heard is (echo_db is not None)
    may_be_heard = canceller.present | canceller.pending
    speaking = slice(int(0.5 / 0.02), int(8.0 / 0.02))  # the bot starts at 0.5 s
    if echo_db is None:
        assert may_be_heard[speaking].mean() < 0.35, may_be_heard[speaking].mean()
    else:
        assert may_be_heard[speaking].all(), np.flatnonzero(~may_be_heard[speaking])


def test_a_voice_the_canceller_cut_like_echo_is_heard_raw():
    """AEC3 now and then cuts a voice standing well over the echo by ~20 dB (live: -16 dBFS
    out at -36); that frame goes on uncancelled, never a frame of echo alone."""
    from processors.echo_path import DoubleTalk

    guard = DoubleTalk()
    rng = np.random.default_rng(0)
    reference = -13.0  # the bot's loudest recent moment, dBFS
    for _ in range(100):  # two seconds of echo alone, 20-30 dB under the bot, cut 25 dB
        raw = reference - rng.uniform(20, 30)
        assert not guard.keep_raw(raw, raw - 25, reference)
    assert guard.keep_raw(-16.0, -36.0, reference)  # the user's voice, cut like echo
    assert not guard.keep_raw(-16.0, -17.0, reference)  # the user's voice, kept by AEC3
    assert not guard.keep_raw(reference - 19, reference - 44, reference)  # loud echo
    assert not guard.keep_raw(-16.0, -36.0, -70.0)  # the bot silent: nothing to cancel


@pytest.mark.parametrize(
    "user_voice,asked_at,echo_db", [("flite-rms", 0.2, -15), ("flite-slt", 0.5, -20)]
)
def test_a_voice_over_the_greeting_does_not_leave_its_echo_judged_absent(
    models, user_voice, asked_at, echo_db
):
    """A question over the greeting (Piper, its echo in the microphone) kept the echo's peak
    from repeating; after the bot's first 2 s of speech the echo was judged absent and the
    answer's first seconds went uncancelled, where its words became false turns. A peak
    seen on the way keeps the verdict open (`pending`) until the path is found."""
    greeting = models.synthesize("Hi! I'm listening. Ask me anything.", RATE)
    answer = models.synthesize(
        "Plants make their food in the leaves, by photosynthesis. The chlorophyll in each "
        "leaf catches the energy of sunlight.",
        RATE,
    )
    bot = np.concatenate([greeting, np.zeros(int(1.5 * RATE), np.int16), answer])
    _, _, canceller, _ = call(
        echo_db, 0.13, user_at=0.5 + asked_at, bot=bot, user_dbfs=-15, user_voice=user_voice,
        after_secs=1.0,
    )
    assert canceller.present.any()
    found = canceller.present.argmax()
    judged_absent = ~canceller.present[:found] & ~canceller.pending[:found]
    assert not judged_absent.any(), np.flatnonzero(judged_absent) * 0.02
