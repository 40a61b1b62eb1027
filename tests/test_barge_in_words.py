"""What words heard over the bot mean (bot/turns/barge_in.py), where the echo canceller called the
segment the bot's own echo: the user may still have spoken on over it."""

from bot.config import Settings
from bot.turns.barge_in import BargeIn
from bot.turns.barge_in_words import BargeInPolicy, Meaning

SAID = "Plants make their food in the leaves, by photosynthesis."


class SaidLately:
    """The speech gate's one answer the judgement reads: what the bot said lately."""

    def __init__(self, text: str):
        self.text, self.held, self.cut_off = text, False, False

    def recent_text(self, since: float | None = None) -> str:
        return self.text

    def release(self) -> None:
        self.held = False


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
    from pipecat.frames.frames import OutputAudioRawFrame, TTSAudioRawFrame, TTSStartedFrame, TTSTextFrame
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
    playing, later = "Plants make their food.", "Oxygen is what the plant gives back to the air around it."
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


class Canceller:
    """The echo canceller's two answers the judgement reads here (what it measures is
    tests/test_echo_cancel.py's): whether it knows the echo, and how far the microphone
    stood over it since a moment."""

    def __init__(self, over_db: float, *, settled: bool = True):
        self.echo_present, self.over_db, self.asked_since = False, over_db, None
        self.echo_pending, self.echo_settled = False, settled

    def voice_over_echo(self) -> bool:
        return True

    def above_floor_db(self):
        return None

    def over_echo_db(self, since: float) -> float:
        self.asked_since = since
        return self.over_db


def test_speech_from_before_the_echo_was_known_is_measured_against_it_once_it_is():
    """The bot's first words came back before anything cancelled them and were transcribed
    ("Let's meet." for "Plants make their food"): once the echo path is known, no more than
    the echo explains is echo, whatever the words; a voice standing over it is the user's."""
    policy = BargeInPolicy.from_settings(Settings(_env_file=None))
    for over_db, meaning in [(5.0, Meaning.ECHO), (14.0, Meaning.INTERRUPTION)]:
        canceller = Canceller(over_db)
        judge = BargeIn(SaidLately(SAID), policy, canceller=canceller, vad_start_secs=0.2)
        judge.bot_speaking = True
        judge.segment_started()  # the echo not known yet
        canceller.echo_present = True  # known by the time the words arrive
        assert judge.meaning("Let's meet.") is meaning
        assert canceller.asked_since is not None
    # Speech that began once the echo was known is judged by the cancelled signal instead.
    canceller = Canceller(5.0)
    canceller.echo_present = True
    judge = BargeIn(SaidLately(SAID), policy, canceller=canceller)
    judge.bot_speaking = True
    judge.segment_started()
    assert judge.meaning("What is the capital of France?") is Meaning.INTERRUPTION
    assert canceller.asked_since is None


def test_in_an_echo_segment_whose_residual_is_not_known_yet_the_raw_level_decides():
    """AEC3 silences most of the echo at first, so its residual's floor is not known for a
    while; garbled echo then came back as eight words not the bot's ("I promise that this
    list before I follow.") and cut it off. The raw microphone against the echo decides."""
    policy = BargeInPolicy.from_settings(Settings(_env_file=None))
    garbled = "I promise that this list before I follow."
    for over_db, meaning in [(5.0, Meaning.ECHO), (14.0, Meaning.INTERRUPTION)]:
        canceller = Canceller(over_db)
        canceller.echo_present = True
        judge = BargeIn(SaidLately(SAID), policy, canceller=canceller)
        judge.bot_speaking = True
        judge.segment_started()
        judge.echo_segment = True  # the canceller: nothing over the echo
        assert judge.meaning(garbled) is meaning


def test_while_aec3_settles_garbled_echo_needs_the_raw_microphone_over_the_echo_too():
    """In an answer's first seconds AEC3's residue stood 11-21 dB over its floor, and
    Whisper made "I believe I post emphasis." of it: four words not the bot's. While the
    canceller is settling, the raw microphone must stand over the echo as well; once it has
    settled, the residual decides as before."""
    policy = BargeInPolicy.from_settings(Settings(_env_file=None))
    garbled = "I believe I post emphasis."
    for settled, raw_db, meaning in [
        (False, 6.0, Meaning.ECHO),
        (False, 14.0, Meaning.INTERRUPTION),
        (True, 6.0, Meaning.INTERRUPTION),
    ]:
        canceller = Canceller(raw_db, settled=settled)
        canceller.echo_present = True
        judge = BargeIn(SaidLately(SAID), policy, canceller=canceller)
        judge.bot_speaking = True
        judge.segment_started()
        judge.echo_segment = True
        judge.segment_over_echo_db = 17.0  # the residual's measure
        assert judge.meaning(garbled) is meaning, (settled, raw_db)


def test_a_draft_heard_before_the_echo_could_be_known_waits_for_the_final_transcript():
    """The bot's first words came back before the canceller could know its echo, and the
    recogniser's draft of them was "Let's make it." (three words): it cut the bot off. Such
    a draft waits; the final transcript, by when the echo is known, is measured against it."""
    policy = BargeInPolicy.from_settings(Settings(_env_file=None))
    canceller = Canceller(6.0)
    canceller.echo_pending = True
    judge = BargeIn(SaidLately(SAID), policy, canceller=canceller)
    judge.bot_speaking = True
    judge.segment_started()
    assert not judge.interrupts("Let's make it.", draft=True)
    assert not judge.interrupts("What is the capital", draft=True)
    canceller.echo_pending, canceller.echo_present = False, True
    assert not judge.interrupts("Let's make this.")  # 6 dB: no more than the echo
    canceller.over_db = 14.0
    assert judge.interrupts("What is the capital of France?")
    # Where the echo was already known (or known absent), a draft of three words cuts in.
    judge.segment_started()
    assert judge.interrupts("What is the capital", draft=True)


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


async def test_words_heard_before_the_canceller_could_tell_wait_for_its_verdict():
    """The first answer's echo ("Carrots is the key." for "Paris is the capital") was
    transcribed 130 ms before the canceller found the echo path, so nothing measured it, and
    it became a turn. Words half the bot's wait for the canceller's verdict (the bot is
    held); where it never comes (headphones: no echo to find), for half a second at most."""
    from pipecat.frames.frames import InputAudioRawFrame, TranscriptionFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.tests.utils import SleepFrame, run_test

    from bot.turns.backchannel_filter import BackchannelFilter
    from bot.turns.barge_in import ECHO_VERDICT_WAIT_SECS

    class PathFoundWithTheNextFrame(FrameProcessor):
        def __init__(self, canceller):
            super().__init__()
            self._canceller = canceller

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                self._canceller.echo_pending, self._canceller.echo_present = False, True
            await self.push_frame(frame, direction)

    policy = BargeInPolicy.from_settings(Settings(_env_file=None))
    words = TranscriptionFrame("Carrots is the key.", "user", "now")
    mic = InputAudioRawFrame(audio=640 * b"\0", sample_rate=16000, num_channels=1)
    for over_db, passed in [(5.0, False), (14.0, True)]:
        canceller = Canceller(over_db)
        canceller.echo_pending = True
        judge = BargeIn(SaidLately("Paris is the capital of France."), policy, canceller=canceller)
        judge.bot_speaking = True
        judge.segment_started()
        down, _ = await run_test(
            Pipeline([PathFoundWithTheNextFrame(canceller), BackchannelFilter(judge)]),
            frames_to_send=[words, SleepFrame(sleep=0.05), mic],  # judged, then the path found
        )
        # (Audio frames are system frames: they need not come out behind the words.)
        assert any(isinstance(f, TranscriptionFrame) for f in down) is passed, down
        assert canceller.asked_since is not None  # measured against the echo once known
    # Words the bot did not say (a question over the greeting) do not wait.
    canceller = Canceller(5.0)
    canceller.echo_pending = True
    judge = BargeIn(SaidLately("Hi! I'm listening. Ask me anything."), policy, canceller=canceller)
    judge.bot_speaking = True
    judge.segment_started()
    question = TranscriptionFrame("What is the capital of France?", "user", "now")
    down, _ = await run_test(BackchannelFilter(judge), frames_to_send=[question])
    assert [type(f) for f in down] == [TranscriptionFrame]
    # No verdict coming: the words are judged as they are once the wait is over.
    canceller = Canceller(5.0)
    canceller.echo_pending = True
    judge = BargeIn(SaidLately("Paris is the capital of France."), policy, canceller=canceller)
    judge.bot_speaking = True
    judge.segment_started()
    down, _ = await run_test(
        BackchannelFilter(judge),
        frames_to_send=[words, mic, SleepFrame(sleep=ECHO_VERDICT_WAIT_SECS + 0.1), mic],
    )
    assert [type(f) for f in down] == [InputAudioRawFrame, TranscriptionFrame, InputAudioRawFrame]


def test_speech_starts_sooner_over_the_bot_only_where_its_echo_is_not_heard():
    """bot/turns/adaptive_vad.py starts speech on VAD_START_SECS_OVER_BOT while this holds: at 0.1 s
    the echo's residue started turns of its own (bench/RESULTS.md, "A shorter VAD start")."""
    canceller = Canceller(0.0)
    judge = BargeIn(SaidLately(SAID), BargeInPolicy.from_settings(Settings(_env_file=None)),
                    canceller=canceller)
    assert not judge.over_bot_without_echo  # the bot is not talking
    judge.bot_speaking = True
    canceller.echo_pending = True  # its first seconds: not known yet
    assert not judge.over_bot_without_echo
    canceller.echo_pending, canceller.echo_present = False, True
    assert not judge.over_bot_without_echo
    canceller.echo_present = False  # headphones, or the browser's canceller
    assert judge.over_bot_without_echo
