"""When the user's turn ends: the transcript, smart-turn and this speaker's own pauses.

Smart-turn judges the end of a turn from the sound of the last seconds. At a comma pause
(0.3-0.5 s in many voices, longer than the VAD's 0.2 s stop) it often hears a finished
turn: "Tell me a long, detailed story" became the turn "Tell me along." (measured:
bench/sentence_turns.py, 68 % of comma-paused questions cut). Whisper's draft of the words
so far settles most of it: it writes a question mark only when it heard a whole question,
and never wrote one at a comma pause there. So `SentenceTurnStop` (Pipecat's smart-turn
stop strategy) decides at the VAD's stop:

- the words are a whole question (a "?" and no sign of more: see below): the turn ends;
- otherwise, unless both the words and smart-turn say it is unfinished, the turn ends
  after as much silence as this speaker's own pauses inside a sentence last (the longest
  seen, times `pause_factor`, within [`min_wait_secs`, `max_wait_secs`]: speech-rate
  aware) if they do not go on. That is also sooner than smart-turn's timeout
  (SMART_TURN_STOP_SECS) for a whole statement smart-turn thought unfinished;
- words and sound both unfinished: smart-turn's timeout, as stock.

Words that stop mid-sentence: a comma or dash at the end, a last word no sentence ends on
("and", "the"; "about" unless asked), an opening "if"/"when"/"because" clause still
waiting for its main clause.

Smart-turn's verdict changes the end only where the words look unfinished, so the model
runs only there: at the VAD's stop the verdict is owed, and asked for once the segment's
words are in (its transcript, the local Whisper's `NoWordsFrame`, words already heard when
the VAD stopped, or, from an STT that stays silent, nothing by its p99 latency).

It extends the speculative stop strategy (bot/turns/speculation.py: the answer started on the
words heard while the turn waits), so both live on one stop path. `decide()` is the rule
alone (bench/sentence_turns.py runs it).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from enum import Enum

from loguru import logger
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    MetricsFrame,
    STTMetadataFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult

from bot.local.smart_turn import SharedSmartTurnAnalyzer
from bot.turns.barge_in import NoWordsFrame
from bot.turns.speculation import SpeculativeTurnStopStrategy
from bot.turns.speech_pause import PauseDetector

# The VAD reports speech start_secs (0.2 s) after it resumes; a waiting turn notices it at
# once from the level (two loud 20 ms frames), and ends anyway if the VAD then hears none.
RESUMED_FRAMES = 2
RESUME_CONFIRM_SECS = 0.4

# Words no spoken sentence, question or request ends on...
DANGLING = frozenset(
    """a an the and or but nor so because if than that which whose my your his her its our
    their these those very really quite um uh er such""".split()
)
# ...and words only a question ends on ("Where are you from?"): dangling without a "?".
DANGLING_UNLESS_ASKED = frozenset(
    """to of in on at by for with from into onto about over under after before between
    through during without what when where why how who whom this some any""".split()
)
# A sentence opening with these is a subordinate clause until a comma (or "then") leads
# into its main clause: "If you had to pick one city" is not yet a question.
OPENERS = (
    "if",
    "when",
    "whenever",
    "because",
    "although",
    "though",
    "while",
    "since",
    "unless",
    "until",
    "after",
    "before",
    "once",
    "as soon as",
    "even if",
    "whether",
)


class Verdict(Enum):
    END = "end"  # the turn is over now
    WAIT = "wait"  # over after the speaker's pause-length wait, unless they go on
    SMART_TURN = "smart-turn"  # unfinished words and sound: smart-turn's own timeout


def looks_unfinished(text: str) -> bool:
    """The transcript stops mid-sentence (see module docstring)."""
    text = text.strip()
    if not text:
        return False
    if re.search(r"(,|;|:|-|—|\.\.\.|…)$", text):
        return True
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return False
    if words[-1] in DANGLING or (words[-1] in DANGLING_UNLESS_ASKED and not text.endswith("?")):
        return True
    opening = " ".join(words[:3])
    if any(opening == o or opening.startswith(o + " ") for o in OPENERS):
        # "If it rains, what then?" has its main clause; "If it rains" does not (nor
        # "If it rains." with Whisper's full stop). Two sentences heard: the clause ended.
        return not re.search(r"[,.?!;]", text[:-1]) and "then" not in words[1:]
    return False


def decide(complete: bool, text: str) -> Verdict:
    """At the VAD's stop: smart-turn's verdict and the words heard so far."""
    unfinished = looks_unfinished(text)
    if text.strip().endswith("?") and not unfinished:
        return Verdict.END
    if complete or not unfinished:
        return Verdict.WAIT
    return Verdict.SMART_TURN


class SentenceTurnStop(SpeculativeTurnStopStrategy):
    """Smart-turn's end of turn, checked against the words and the speaker's pauses."""

    def __init__(
        self,
        *,
        turn_analyzer,
        final_per_segment: bool = False,
        min_wait_secs: float = 0.55,
        max_wait_secs: float = 1.0,
        pause_factor: float = 1.3,
        **kwargs,
    ):
        super().__init__(turn_analyzer=turn_analyzer, **kwargs)
        # Smart-turn runs only while a turn is in progress (bot/local/smart_turn.py).
        shared = isinstance(turn_analyzer, SharedSmartTurnAnalyzer)
        self._analyzer = turn_analyzer if shared else None
        if shared:
            turn_analyzer.verdict_on_request = True
        self._set_turn_in_progress(False)
        self._min_wait = min_wait_secs
        self._max_wait = max_wait_secs
        self._pause_factor = pause_factor
        # The turn's latest transcript, as TurnAnalyzerUserTurnStopStrategy keeps it.
        self._words = ""
        self._in_turn = False
        self._wait: asyncio.Task | None = None
        self._stopped_at: float | None = None
        self._pauses: deque[float] = deque(maxlen=20)  # this user's mid-turn pauses, seconds
        self._level = PauseDetector()
        self._loud_frames = 0
        self._pending_end: dict | None = None  # the end a level rise put on hold
        self._wait_kwargs: dict = {}
        # With an STT that answers every VAD segment with one final transcript or a
        # NoWordsFrame (the local Whisper), a turn never ends with words still on their way.
        self._final_per_segment = final_per_segment
        self._segments_pending = 0
        self._end_when_heard: dict | None = None
        # Words heard since the VAD last heard speech start; the STT's p99 latency (its
        # STTMetadataFrame), after which an owed verdict is asked for without them.
        self._segment_heard = False
        self._stt_wait_secs = 1.0
        self._owed_timer: asyncio.Task | None = None

    @property
    def wait_secs(self) -> float:
        """Silence (since the speech stopped) that ends a turn not sure to be over."""
        return pause_wait(self._pauses, self._pause_factor, self._min_wait, self._max_wait)

    async def handle_user_turn_started(self):
        await super().handle_user_turn_started()
        await self._cancel_wait()
        self._words, self._in_turn = "", True
        self._set_turn_in_progress(True)
        self._segments_pending, self._end_when_heard = 0, None
        self._level.reset()

    async def handle_user_turn_stopped(self):
        await super().handle_user_turn_stopped()
        await self._cancel_wait()
        await self._cancel_owed_timer()
        self._words, self._in_turn, self._stopped_at = "", False, None
        self._set_turn_in_progress(False)

    def _set_turn_in_progress(self, in_progress: bool) -> None:
        if self._analyzer is not None:
            self._analyzer.turn_in_progress = in_progress

    async def cleanup(self):
        await self._cancel_wait()
        await self._cancel_owed_timer()
        await super().cleanup()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame) and self._in_turn:
            await self._listen_for_more(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            if self._stopped_at is not None and self._in_turn:  # a pause inside the turn
                self._pauses.append(time.monotonic() - frame.start_secs - self._stopped_at)
            self._stopped_at = None
            self._pending_end = None
            self._segment_heard = False
            await self._cancel_wait()  # speech came back: the turn goes on
            await self._cancel_owed_timer()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._stopped_at = time.monotonic() - frame.stop_secs
            self._segments_pending += self._in_turn
        elif isinstance(frame, TranscriptionFrame):
            self._words = frame.text
        elif isinstance(frame, STTMetadataFrame):
            self._stt_wait_secs = frame.ttfs_p99_latency
        if isinstance(frame, (TranscriptionFrame, NoWordsFrame)):
            self._segments_pending = max(0, self._segments_pending - 1)
            self._segment_heard = True
        result = await super().process_frame(frame)
        if self._end_when_heard is not None and not self._words_pending:
            kwargs, self._end_when_heard = self._end_when_heard, None
            await self.trigger_user_turn_stopped(**kwargs)
        if self._in_turn and self._stopped_at is not None and self._wait is None:
            if isinstance(frame, TranscriptionFrame) and self._words:
                await self._words_in()
            elif self._verdict_owed and isinstance(frame, NoWordsFrame):
                await self._words_in()
            elif self._verdict_owed and isinstance(frame, VADUserStoppedSpeakingFrame):
                if self._segment_heard and not self._words_pending:
                    await self._words_in()  # the STT's words came before the VAD's stop
                elif not self._final_per_segment:
                    self._owed_timer = self.task_manager.create_task(
                        self._words_in_after(self._stt_wait_secs), f"{self}::owed"
                    )
        return result

    @property
    def _verdict_owed(self) -> bool:
        return self._analyzer is not None and self._analyzer.verdict_owed

    async def _words_in(self) -> None:
        """The segment's words are in: smart-turn judges if they look unfinished; otherwise
        (or if it thought the turn unfinished) the words may still end the turn sooner
        than its timeout."""
        if self._words_pending:
            return
        await self._cancel_owed_timer()
        if self._verdict_owed and looks_unfinished(self._words):
            state, metrics = await self._analyzer.judge()
            if metrics:
                await self.push_frame(MetricsFrame(data=[metrics]))
            if state == EndOfTurnState.COMPLETE:
                await self.trigger_user_turn_stopped()
                return
        verdict = decide(False, self._words)
        if verdict is Verdict.END:
            await self.trigger_user_turn_stopped()
        elif verdict is Verdict.WAIT:
            self._wait = self.task_manager.create_task(self._end_after_wait({}), f"{self}::wait")

    async def _words_in_after(self, secs: float) -> None:
        await asyncio.sleep(secs)
        self._owed_timer = None
        if self._in_turn and self._stopped_at is not None and self._wait is None:
            await self._words_in()

    async def _cancel_owed_timer(self) -> None:
        if self._owed_timer is not None and self._owed_timer is not asyncio.current_task():
            await self.task_manager.cancel_task(self._owed_timer)
        self._owed_timer = None

    @property
    def _words_pending(self) -> bool:
        return self._final_per_segment and self._segments_pending > 0

    async def trigger_user_turn_stopped(self, **kwargs):
        """Smart-turn (or its timeout) says the turn is over: unless words or pauses disagree."""
        if self._words_pending:
            self._end_when_heard = kwargs  # decided once the last words are in
            return
        if self._stopped_at is None or decide(True, self._words) is Verdict.END:
            await self._cancel_wait()
            await super().trigger_user_turn_stopped(**kwargs)
        elif self._wait is None:
            self._wait = self.task_manager.create_task(
                self._end_after_wait(kwargs), f"{self}::wait"
            )

    async def _listen_for_more(self, frame: InputAudioRawFrame) -> None:
        """While a turn waits to end, a voice coming back (by its level, before the VAD's
        start_secs) holds the end; if the VAD then hears no speech, the turn ends."""
        self._level.update(frame.audio)
        self._loud_frames = 0 if self._level.quiet else self._loud_frames + 1
        if (
            self._wait is not None
            and self._pending_end is None  # not already confirming (loudness that lasts)
            and self._loud_frames >= RESUMED_FRAMES
            and self._stopped_at is not None
        ):
            self._pending_end = self._wait_kwargs
            await self._cancel_wait()
            self._wait = self.task_manager.create_task(self._confirm_resumed(), f"{self}::resumed")

    async def _confirm_resumed(self) -> None:
        await asyncio.sleep(RESUME_CONFIRM_SECS)
        self._wait = None
        if self._pending_end is not None:  # no speech after all
            kwargs, self._pending_end = self._pending_end, None
            await super().trigger_user_turn_stopped(**kwargs)

    async def _end_after_wait(self, kwargs: dict) -> None:
        self._wait_kwargs = kwargs
        wait = self.wait_secs
        logger.debug(f"{self}: {self._words!r} may go on: waiting up to {wait:.2f} s of silence")
        await asyncio.sleep(max(0.0, self._stopped_at + wait - time.monotonic()))
        self._wait = None
        if self._words_pending:
            self._end_when_heard = kwargs
            return
        if self._loud_frames >= RESUMED_FRAMES:
            # The voice came back before this wait began (its words were late, so the
            # silence had all but run out): held as if it had come back during the wait.
            self._pending_end = kwargs
            self._wait = self.task_manager.create_task(self._confirm_resumed(), f"{self}::resumed")
            return
        await super().trigger_user_turn_stopped(**kwargs)

    async def _cancel_wait(self) -> None:
        if self._wait is not None and self._wait is not asyncio.current_task():
            await self.task_manager.cancel_task(self._wait)
        self._wait = None


def pause_wait(pauses, factor: float, low: float, high: float) -> float:
    """The silence that ends an uncertain turn: this speaker's longest pause inside a
    sentence so far, with a margin, within [low, high]."""
    return min(high, max(low, max(pauses, default=0.0) * factor))
