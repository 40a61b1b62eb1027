"""What the user's voice means while the bot is speaking.

When the VAD hears the user over the bot, the bot falls silent at once (`SpeechGate.hold`,
nothing is lost) and what was said decides what happens next:

- words that are not the bot's own and not a backchannel, or an interrupt word
  ("wait", "stop", "no"): a real barge-in. The user's turn starts, the answer is dropped.
- a backchannel ("mm-hmm", "yeah", "okay"; fewer than `min_words` words, or only
  backchannel words): the bot goes on where it stopped. The transcript becomes a
  `UserBackchannelFrame` (the user aggregator's `on_user_backchannel`), never a turn.
- the bot's own words (its echo, transcribed): it goes on; nothing reaches the context.
- nothing transcribable (a cough, a door): as soon as the STT says so (`NoWordsFrame`;
  an STT that cannot: `false_interruption_secs` after the sound ends), the bot says the
  interrupted sentence again and carries on, as LiveKit's `resume_false_interruption`
  does, instead of apologising.

When the bot is not speaking, the VAD starts the user's turn as usual. The turn start
strategy that holds and resumes the bot is in bot/turns/barge_in_start.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from loguru import logger
from pipecat.frames.frames import (
    SystemFrame,
)

from bot.turns.barge_in_words import BargeInPolicy, Meaning, canonical, split_words
from processors.speech_gate import SpeechGate

# Words the bot did not just say that make speech in a segment that began as its echo the
# user's: garbled residue has brought three ("Please, bye photo.", "I post emphasis." for
# "in the leaves, by photosynthesis"); a question spoken on over the echo brings more.
ECHO_SEGMENT_OWN_WORDS = 4
# A draft transcript (an interim) of fewer words than this, with no interrupt word, waits for
# the final one before it cuts the bot off: the bot is already paused, and Whisper's drafts of
# a backchannel are short mishearings ("I'm not." for "Uh-huh.") in which its final
# transcript then finds no words.
DRAFT_MIN_WORDS = 3
# In a segment the canceller called echo, words count as the user's only if the segment once
# stood this far over the echo's measured residual: garbled residue transcribes as words ("I
# will send this list before.") and starts at -7..+8 dB; voices over the echo at 10 and more.
WORDS_OVER_ECHO_DB = 10.0
# The final transcript of speech that began before the canceller could tell whether the
# microphone hears the bot waits at most this long for it to tell: the bot is held meanwhile,
# and the echo already heard decides within three of the echo path's estimates, 0.25 s apart
# (steady peaks; the path of a "Harris is the key." was found 65 ms after a 0.5 s wait).
ECHO_VERDICT_WAIT_SECS = 0.8


@dataclass
class NoWordsFrame(SystemFrame):
    """The STT transcribed a stretch of speech and found no words in it (a cough, a door,
    a mumble), so nothing more is coming for it: a barge-in it caused can be undone now."""


class BargeIn:
    """One session's barge-in state, shared by the start strategy and the filter.

    For `echo_tail_secs` after the bot stops, its last words are still coming back through
    the client's playout buffer and the room: speech heard then is judged too, but only as
    echo or not (a "yes" right after the bot asked something is an answer, not a backchannel).
    """

    def __init__(
        self,
        gate: SpeechGate,
        policy: BargeInPolicy,
        echo_tail_secs: float = 1.0,
        canceller=None,
        vad_start_secs: float = 0.2,
    ):
        self.gate = gate
        self.policy = policy
        self.echo_tail_secs = echo_tail_secs
        self.canceller = canceller
        # The STT answers every speech segment (words, or a NoWordsFrame): no timer needed.
        self.stt_answers_every_segment = False
        self._bot_speaking = False
        self._bot_stopped_at = -1e9
        # What the latest transcript heard over the bot meant (None: nothing yet).
        self.heard: Meaning | None = None
        # The speech the VAD hears now is, by the echo canceller's measure, only the bot's
        # own echo: whatever the STT makes of it is not the user's.
        self.echo_segment = False
        # The most the segment stood over the echo's measured residual, in dB (None: not
        # measured: no echo, or its residual not known yet).
        self.segment_over_echo_db: float | None = None
        # When the speech the VAD hears now began, and whether the echo path was known then.
        self._vad_start_secs = vad_start_secs
        self._segment_began = 0.0
        self._segment_echo_known = True
        self._segment_echo_pending = False
        self._segment_over_bot = False
        self.backchannels = 0
        self.echoes = 0
        self.resumed = 0

    @property
    def bot_speaking(self) -> bool:
        return self._bot_speaking

    @bot_speaking.setter
    def bot_speaking(self, speaking: bool) -> None:
        if self._bot_speaking and not speaking:
            self._bot_stopped_at = time.monotonic()
        self._bot_speaking = speaking

    @property
    def talking(self) -> bool:
        """The bot is speaking, or held mid-speech."""
        return self._bot_speaking or (self.gate.held and self.gate.cut_off)

    @property
    def listening_over_bot(self) -> bool:
        """What the user says now is judged, not just heard: the bot is talking, or its
        last words may still be echoing."""
        return self.talking or time.monotonic() - self._bot_stopped_at < self.echo_tail_secs

    @property
    def judging_words(self) -> bool:
        """Words transcribed now are judged as said over the bot: it is talking or just
        stopped, or the speech they come from began then. (The final transcript of speech
        heard over the bot's last words can come over a second after them: Whisper decodes
        a transcript it is unsure of again; the first answer's echo passed for a turn so.)"""
        return self.listening_over_bot or self._segment_over_bot

    @property
    def echo_may_be_heard(self) -> bool:
        """The bot's echo may be in the microphone now: it is talking (or just stopped), and
        the canceller has heard its echo or has not heard enough of the bot yet to tell.
        Headphones, or a browser whose own canceller removed it, leave no echo to hear."""
        if not self.listening_over_bot:
            return False
        canceller = self.canceller
        return canceller is None or canceller.echo_present or canceller.echo_pending

    @property
    def over_bot_without_echo(self) -> bool:
        """The bot is talking (or just stopped) into a microphone that hears none of it: a
        start of speech there can only be the user's (bot/turns/adaptive_vad.py starts it
        sooner)."""
        return self.listening_over_bot and not self.echo_may_be_heard

    def voice_over_echo(self) -> bool:
        """The echo canceller's view: more than the bot's cancelled echo in the microphone."""
        return self.canceller is None or self.canceller.voice_over_echo()

    def segment_started(self, start_secs: float | None = None) -> None:
        """The VAD has heard speech start (`start_secs`, by default `vad_start_secs`, ago)."""
        self.echo_segment = False
        self.segment_over_echo_db = None
        began = self._vad_start_secs if start_secs is None else start_secs
        self._segment_began = time.monotonic() - began
        self._segment_echo_known = self.canceller is None or self.canceller.echo_present
        self._segment_echo_pending = self.canceller is not None and self.canceller.echo_pending
        self._segment_over_bot = self.listening_over_bot

    def awaits_echo_verdict(self, text: str, since: float) -> bool:
        """Words that came at `since`, half of them or more the bot's, of speech begun before
        the canceller could tell whether the microphone hears the bot, and it still cannot:
        judged once it can (the first answer's echo, "Carrots is the key." for "Paris is the
        capital", came 130 ms before its path was found and was taken for the user's), or
        `ECHO_VERDICT_WAIT_SECS` after they came (headphones). Words the bot did not say (a
        question over the greeting) are judged at once: nothing cancelled its echo yet, so
        Whisper hears that echo well and keeps its words."""
        canceller = self.canceller
        if not (self._segment_echo_pending and canceller is not None and canceller.echo_pending):
            return False
        words = {canonical(w) for w in split_words(text)}
        said = {canonical(w) for w in split_words(self._said())}
        waited = time.monotonic() - since
        return 2 * len(words & said) >= len(words) and waited < ECHO_VERDICT_WAIT_SECS

    def _echo_before_known(self) -> bool:
        """Speech that began before the echo path was known (nothing cancelled it) and,
        measured now that it is, never rose over what the bot's echo explains."""
        if self._segment_echo_known or not self.canceller.echo_present:
            return False
        over = self.canceller.over_echo_db(self._segment_began)
        logger.debug(f"Speech heard before the echo was known: {over} dB over the echo")
        return over is not None and over < WORDS_OVER_ECHO_DB

    def _said(self) -> str:
        """What the bot said that the speech heard now may hold the echo of: its last
        seconds, and all it said since that speech began (a long echo segment)."""
        return self.gate.recent_text(since=self._segment_began)

    def meaning(self, text: str) -> Meaning | None:
        meaning = self.policy.meaning(text, self._said())
        if meaning is Meaning.BACKCHANNEL and not self.talking:
            return Meaning.INTERRUPTION  # the bot has finished: these are words for it
        if meaning is Meaning.INTERRUPTION and self._echo_before_known():
            return Meaning.ECHO
        if self.echo_segment and meaning is Meaning.INTERRUPTION:
            over = self.segment_over_echo_db
            if self.canceller is not None and (over is None or not self.canceller.echo_settled):
                # The echo's residual not measured yet (AEC3 silences most of it at first),
                # or no measure yet (AEC3 still settling): the raw microphone against what
                # the bot's audio explains as well, and the lower of the two.
                raw = self.canceller.over_echo_db(self._segment_began)
                over = raw if over is None or raw is None else min(over, raw)
            logger.debug(f"Words in an echo segment: {over} dB over the echo: {text!r}")
            if over is not None and over < WORDS_OVER_ECHO_DB:
                return Meaning.ECHO  # measured: no more than the echo's residue, whatever words
            # The segment began as the bot's echo; the user may have spoken on over it
            # ("food. What is the capital of France?"). Theirs only with words of their own.
            # (Before the bot's first words are in its recent text, nothing can be told.)
            said = {canonical(w) for w in split_words(self._said())}
            own = {canonical(w) for w in split_words(text)} - said
            if not said or len(own) < ECHO_SEGMENT_OWN_WORDS:
                return Meaning.ECHO
        return meaning

    def interrupts(self, text: str, *, draft: bool = False) -> bool:
        """Whether `text`, heard over the bot, starts the user's turn; a `draft` (interim)
        only with an interrupt word or `DRAFT_MIN_WORDS` words, and never in speech that
        began before the canceller could tell whether the microphone hears the bot at all:
        the bot's first words come back garbled ("Let's make it."), and by the final
        transcript the echo is known and measured (the bot is held meanwhile)."""
        if draft and self._segment_echo_pending:
            return False
        if self.meaning(text) is not Meaning.INTERRUPTION:
            return False
        words = [canonical(w) for w in split_words(text)]
        return not draft or len(words) >= DRAFT_MIN_WORDS or self.policy.has_interrupt_word(words)
