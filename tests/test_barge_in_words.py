"""What words heard over the bot mean (bot/turns/barge_in.py), where the echo canceller called the
segment the bot's own echo: the user may still have spoken on over it."""

from bot.config import Settings
from bot.turns.barge_in import BargeIn
from bot.turns.barge_in_words import BargeInPolicy, Meaning
from tests.support.barge_in import SAID, SaidLately


def barge_in(said: str = SAID) -> BargeIn:
    policy = BargeInPolicy.from_settings(Settings(_env_file=None))
    judge = BargeIn(SaidLately(said), policy)
    judge.bot_speaking = True
    return judge


async def test_a_question_spoken_on_over_the_echo_reaches_the_user_turn():
    """Through the filter before the user aggregator: the question passes, the echo not."""
    from pipecat.frames.frames import TranscriptionFrame
    from pipecat.tests.utils import run_test

    from bot.turns.backchannel_filter import BackchannelFilter

    judge = barge_in()
    judge.echo_segment = True
    question = TranscriptionFrame("food. What is the capital of France?", "user", "now")
    echo = TranscriptionFrame("Plants make this.", "user", "now")
    down, _ = await run_test(
        BackchannelFilter(judge), frames_to_send=[echo, question],
        expected_down_frames=[TranscriptionFrame],
    )
    assert down[0].text == question.text


async def test_words_of_speech_begun_over_the_bot_are_judged_however_late_they_come():
    """The first answer's echo ("It is a big city.") began over the bot's last words; Whisper,
    unsure of its first decode, decoded it again, and that final transcript ("It's a big
    step.") came after the bot's echo tail: it was taken for the user's turn and the bot
    answered its own echo. Words are judged by when their speech began."""
    from pipecat.frames.frames import TranscriptionFrame
    from pipecat.tests.utils import run_test

    from bot.turns.backchannel_filter import BackchannelFilter

    policy = BargeInPolicy.from_settings(Settings(_env_file=None))
    said = SaidLately("Paris is the capital of France. It is a big city.")
    judge = BargeIn(said, policy, echo_tail_secs=0.0)
    judge.bot_speaking = True
    judge.segment_started()
    judge.echo_segment, judge.segment_over_echo_db = True, 5.0  # the canceller: its echo
    judge.bot_speaking = False  # the bot has finished, its tail over, when the words come
    late = TranscriptionFrame("It's a big step.", "user", "now")
    down, _ = await run_test(
        BackchannelFilter(judge), frames_to_send=[late], expected_down_frames=[]
    )
    # Speech that begins after the bot has finished is the user's, whatever its words.
    judge.segment_started()
    down, _ = await run_test(
        BackchannelFilter(judge), frames_to_send=[late], expected_down_frames=[TranscriptionFrame]
    )


def test_the_echo_garbled_by_the_recogniser_is_still_echo():
    judge = barge_in()
    judge.echo_segment = True
    assert judge.meaning("Plants make this.") is Meaning.ECHO
    assert judge.meaning("in the lead.") is Meaning.ECHO
    assert judge.meaning("I post emphasis.") is Meaning.ECHO  # "…by photosynthesis"
    # Before the bot's words are known nothing in an echo segment is the user's.
    early = barge_in(said="")
    early.echo_segment = True
    assert early.meaning("Plants me, sir.") is Meaning.ECHO


def test_outside_an_echo_segment_the_words_alone_decide():
    judge = barge_in()
    assert judge.meaning("What is the capital of France?") is Meaning.INTERRUPTION
    assert judge.meaning("Mm-hmm.") is Meaning.BACKCHANNEL


def test_a_short_echo_the_recogniser_garbled_a_word_of_is_still_echo():
    judge = barge_in()
    assert judge.meaning("Plants make this.") is Meaning.ECHO
    assert judge.meaning("What is the capital?") is Meaning.INTERRUPTION


def test_a_five_word_echo_with_two_words_misheard_is_still_echo():
    """Its own echo at -10 dB, loud enough to pass for a voice, came back as five words of
    which three are the sentence's, in order: the bot must not take it for the user."""
    judge = barge_in("Oxygen is what the plant gives back to the air around it.")
    assert judge.meaning("it's back to the end.") is Meaning.ECHO
    # A question of the same length that shares common words with it is the user's.
    assert judge.meaning("What is the air made of?") is Meaning.INTERRUPTION


async def test_only_sentences_already_heard_can_come_back_as_echo():
    """The speech gate's "what the bot said lately" stops at the sentence it is saying: the
    rest of the answer is queued long before it is heard, and a question asked over the bot
    ("What is it?") shares words with it ("Oxygen is what … it")."""
    from pipecat.frames.frames import (
        OutputAudioRawFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSTextFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.tests.utils import run_test

    from processors.speech_gate import SpeechGate

    gate = SpeechGate()
    heard_while_playing: list[str] = []

    class Listener(FrameProcessor):
        """Half a second into the first sentence's audio, asks the gate what was said."""

        chunks = 0

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, OutputAudioRawFrame):
                self.chunks += 1
                if self.chunks == 25:
                    heard_while_playing.append(gate.recent_text())
            await self.push_frame(frame, direction)

    second = 16000 * 2 * b"\0"
    playing, later = ("Plants make their food.",
                      "Oxygen is what the plant gives back to the air around it.")
    await run_test(
        Pipeline([gate, Listener()]),
        frames_to_send=[
            TTSStartedFrame(),
            TTSAudioRawFrame(second, 16000, 1),
            TTSTextFrame(playing, "sentence"),
            TTSAudioRawFrame(second, 16000, 1),
            TTSTextFrame(later, "sentence"),
        ],
    )
    assert heard_while_playing == [playing]
    judge = barge_in(said=heard_while_playing[0])
    assert judge.meaning("What is it?") is Meaning.INTERRUPTION


def test_hums_are_not_words():
    """Whisper spells a hum as it likes ("and HNN." for "Mm-hmm."): not words of a question."""
    judge = barge_in()
    assert judge.meaning("and HNN.") is Meaning.BACKCHANNEL
    assert judge.meaning("Hmm, what is the capital of France?") is Meaning.INTERRUPTION


def test_one_word_looped_by_the_recogniser_is_not_a_question():
    """Whisper heard a flite voice's "Mm-hmm." as "And, and, and, and." (bench.backchannels):
    four words, all one; the bot goes on. A repeated interrupt word still stops it."""
    judge = barge_in()
    assert judge.meaning("And, and, and, and.") is Meaning.BACKCHANNEL
    assert judge.meaning("Stop, stop, stop.") is Meaning.INTERRUPTION
    assert judge.meaning("And then what?") is Meaning.INTERRUPTION


def test_a_short_draft_over_the_bot_waits_for_the_final_transcript():
    """The eager draft of "Uh-huh." was "I'm not."; the final transcript found no words."""
    judge = barge_in()
    assert not judge.interrupts("I'm not.", draft=True)
    assert judge.interrupts("I'm not.")  # the final transcript: two words of the user's
    assert judge.interrupts("Stop.", draft=True)
    assert judge.interrupts("What is the capital", draft=True)


def test_in_a_measured_echo_segment_only_a_voice_over_the_echo_has_words():
    """Garbled residue transcribes as words of its own ("I will send this list before."); if
    the segment never stood 10 dB over the echo's residual, they are echo."""
    judge = barge_in()
    judge.echo_segment = True
    judge.segment_over_echo_db = 4.0
    assert judge.meaning("I will send this list before.") is Meaning.ECHO
    judge.segment_over_echo_db = 14.0
    assert judge.meaning("food. What is the capital of France?") is Meaning.INTERRUPTION


async def test_a_long_echo_segment_is_matched_against_all_the_bot_said_in_it():
    """The VAD heard the bot's echo for longer than the gate's "lately" (its first words
    came back well transcribed: "And there's a lot to say about it. It began a very long
    time ago…") and the words of its first sentences were taken for the user's. What the
    bot said since the segment began counts as well."""
    import time

    from pipecat.frames.frames import TTSAudioRawFrame, TTSStartedFrame, TTSTextFrame
    from pipecat.tests.utils import run_test

    from processors.speech_gate import SpeechGate

    gate = SpeechGate(recent_secs=0.3)
    judge = BargeIn(gate, BargeInPolicy.from_settings(Settings(_env_file=None)))
    judge.bot_speaking = True
    judge.segment_started()  # the echo heard from before the first sentence on
    began = time.monotonic()
    sentences = ["There is a lot to say about it.", "It began a very long time ago.",
                 "People first wrote things down."]
    frames = [TTSStartedFrame()]
    for sentence in sentences:
        frames += [TTSAudioRawFrame(16000 * b"\0", 16000, 1), TTSTextFrame(sentence, "sentence")]
    await run_test(gate, frames_to_send=frames)  # 1.5 s of the bot's speech, in real time
    assert gate.recent_text() == sentences[-1]
    assert gate.recent_text(since=began) == " ".join(sentences)
    judge.echo_segment = True
    assert judge.meaning("There's a lot to say about it. It began a very long time ago.") is (
        Meaning.ECHO
    )


async def test_text_said_with_little_audio_is_not_kept_as_possible_echo():
    """What the gate keeps as "what the bot said" is bounded by what anyone can say in its
    30 s, not only by time: sentences whose audio was a blip (a TTS that said little or
    nothing of them) would otherwise pile up, 16 KB a turn in the 500-turn memory test."""
    import time

    from pipecat.frames.frames import TTSAudioRawFrame, TTSStartedFrame, TTSTextFrame
    from pipecat.tests.utils import run_test

    from processors.speech_gate import KEPT_TEXT_CHARS, SpeechGate

    gate = SpeechGate()
    began = time.monotonic()
    sentences = [f"Sentence {i} goes on and on and on for a good while." for i in range(200)]
    frames = [TTSStartedFrame()]
    for sentence in sentences:
        frames += [TTSAudioRawFrame(32 * b"\0", 16000, 1), TTSTextFrame(sentence, "sentence")]
    await run_test(gate, frames_to_send=frames)
    kept = gate.recent_text(since=began)
    assert kept.endswith(sentences[-1]) and len(kept) <= KEPT_TEXT_CHARS + len(sentences), len(kept)
    assert sentences[0] not in kept
