"""The user turn's start while the bot speaks: hold the bot, start the turn only for real
words (what they mean: bot/turns/barge_in.py).

A hold with no verdict after `max_hold_secs` (an STT without interim transcripts) ends:
a barge-in if the user is still talking, the bot goes on if not. An STT that answers every
segment (with words, or `NoWordsFrame`) is waited for instead, up to `HOLD_ROUNDS` times
as long: on a busy machine Whisper's "Okay." can come after 5 s, and the bot would have
said its sentence again over a backchannel.
"""

from __future__ import annotations

import asyncio

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TranscriptionFrame,
    UserBackchannelFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import VADUserTurnStartStrategy

from bot.turns.barge_in import BargeIn, NoWordsFrame

# A hold waiting for the STT's verdict on speech that has ended lasts at most this many
# times `max_hold_secs` (a segment whose transcription failed gets no verdict).
HOLD_ROUNDS = 3


class BargeInStartStrategy(VADUserTurnStartStrategy):
    """VAD turn start, except over the bot: hold it, and start the turn only for real words.

    A transcript that arrives with no turn started (speech the VAD did not catch, or words
    that came after the bot had gone on) starts one too, so no words are left waiting in the
    aggregator for the next turn.
    """

    def __init__(
        self,
        *,
        barge_in: BargeIn,
        false_interruption_secs: float = 1.0,
        max_hold_secs: float = 4.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._barge_in = barge_in
        self._false_interruption_secs = false_interruption_secs
        self._max_hold_secs = max_hold_secs
        self._in_turn = False
        self._held = False
        self._vad_speaking = False
        self._quiet_timer: asyncio.Task | None = None
        self._hold_timer: asyncio.Task | None = None
        # The held speech has ended and the STT's verdict on it (words or none) is to come.
        self._verdict_due = False
        self._hold_rounds = 0

    async def handle_user_turn_started(self):
        await super().handle_user_turn_started()
        self._in_turn = True
        await self._end_hold()

    async def handle_user_turn_stopped(self):
        await super().handle_user_turn_stopped()
        self._in_turn = False

    async def cleanup(self):
        await self._end_hold()
        await super().cleanup()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, (TranscriptionFrame, NoWordsFrame, UserBackchannelFrame)):
            self._verdict_due = False
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_speaking = True
            self._barge_in.segment_started(frame.start_secs)
            if self._in_turn:
                return ProcessFrameResult.CONTINUE  # the user going on with their turn
            if not self._barge_in.listening_over_bot:
                return await self._start()
            await self._maybe_hold()
            return ProcessFrameResult.STOP
        if isinstance(frame, InputAudioRawFrame):
            # The VAD is hearing what so far was only the bot's echo: hold if a voice rises.
            if (
                self._vad_speaking
                and not (self._held or self._in_turn)
                and self._barge_in.listening_over_bot
            ):
                await self._maybe_hold()
            return ProcessFrameResult.CONTINUE
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_speaking = False
            if self._held and self._barge_in.stt_answers_every_segment:
                self._verdict_due = True
            elif self._held:
                # An STT that never says "no words": a timer says it for it.
                self._quiet_timer = await self._restart(
                    self._quiet_timer, self._false_interruption_secs, self._resume
                )
        elif isinstance(frame, NoWordsFrame):
            if self._held and not self._vad_speaking:
                await self._resume()  # the STT is sure: no words are coming
        elif isinstance(frame, (UserBackchannelFrame, InterruptionFrame)) or (
            self._held and not self._barge_in.gate.held
        ):
            await self._end_hold()  # the filter let it pass (a backchannel, or echo), or done
        elif isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
            # The filter has let backchannels and echo pass: these are words for the bot.
            draft = isinstance(frame, InterimTranscriptionFrame)
            if self._in_turn or (draft and not self._held):
                return ProcessFrameResult.CONTINUE
            judged = self._barge_in.judging_words
            if not judged or self._barge_in.interrupts(frame.text, draft=draft):
                logger.debug(f"{self}: words with no turn started: {frame.text!r}")
                return await self._start()
        return ProcessFrameResult.CONTINUE

    async def _start(self) -> ProcessFrameResult:
        await self.trigger_user_turn_started()
        return ProcessFrameResult.STOP

    async def _maybe_hold(self) -> None:
        self._barge_in.echo_segment = not self._barge_in.voice_over_echo()
        canceller = self._barge_in.canceller
        above = canceller.above_floor_db() if canceller is not None else None
        if above is not None:
            so_far = self._barge_in.segment_over_echo_db
            self._barge_in.segment_over_echo_db = above if so_far is None else max(so_far, above)
        if not self._barge_in.echo_segment:
            if canceller is not None and canceller.echo_present:
                logger.debug(
                    f"{self}: a voice over the echo "
                    f"({canceller.above_floor_db()} dB over its residual)"
                )
            await self._hold()

    async def _hold(self) -> None:
        await self._cancel(self._quiet_timer)
        self._quiet_timer = None
        if not self._held:
            self._held = True
            self._hold_rounds = 0
            self._barge_in.heard = None
            self._barge_in.gate.hold()
            self._hold_timer = await self._restart(
                self._hold_timer, self._max_hold_secs, self._long_hold
            )

    async def _long_hold(self) -> None:
        """No verdict for this long (an STT without interim transcripts): someone still
        talking over the silent bot is a barge-in; otherwise the bot goes on. (Its own echo
        stops with it, so a hold on echo ends with the VAD and the transcript.)"""
        self._hold_timer = None
        if not self._held:
            return
        self._hold_rounds += 1
        if self._verdict_due and not self._vad_speaking and self._hold_rounds < HOLD_ROUNDS:
            # The speech has ended and the STT is still on it (a busy machine): its
            # verdict, not the clock, says what the speech was.
            logger.debug(f"{self}: still waiting for the STT's verdict on the held speech")
            self._hold_timer = await self._restart(None, self._max_hold_secs, self._long_hold)
            return
        if self._vad_speaking:
            logger.debug(f"{self}: {self._max_hold_secs:.1f} s of speech over the bot: a barge-in")
            await self.trigger_user_turn_started()
        else:
            await self._resume()

    async def _resume(self) -> None:
        """The sound that cut the bot off had no words: the interrupted sentence again.
        (Words that come later still start a turn: nothing is thrown away.)"""
        self._quiet_timer = None
        if not self._held or self._in_turn:
            return
        await self._end_hold()
        if self._barge_in.gate.cut_off:
            self._barge_in.resumed += 1
            await self._barge_in.gate.replay_sentence()
        else:
            self._barge_in.gate.release()  # nothing was cut off (the bot had finished)

    async def _end_hold(self) -> None:
        self._held = False
        self._verdict_due = False
        await self._cancel(self._quiet_timer)
        await self._cancel(self._hold_timer)
        self._quiet_timer = self._hold_timer = None

    async def _restart(self, timer: asyncio.Task | None, secs: float, then) -> asyncio.Task:
        await self._cancel(timer)

        async def wait_then():
            await asyncio.sleep(secs)
            await then()

        return self.task_manager.create_task(wait_then(), f"{self}::barge-in-timer")

    async def _cancel(self, timer: asyncio.Task | None) -> None:
        if timer and timer is not asyncio.current_task():
            await self.task_manager.cancel_task(timer)
