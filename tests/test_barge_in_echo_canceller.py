"""What words heard over the bot mean once the echo canceller has measured them
(bot/turns/barge_in.py): how far the microphone stood over the echo, and whether the echo
was known yet, decide where the words alone cannot."""

from bot.config import Settings
from bot.turns.barge_in import BargeIn
from bot.turns.barge_in_words import BargeInPolicy, Meaning
from tests.support.barge_in import SAID, SaidLately


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
