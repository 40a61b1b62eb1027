"""Before the user aggregator: what is said over the bot is judged (bot/turns/barge_in.py) and
backchannels and echo never become turns."""

from __future__ import annotations

import time

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserBackchannelFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.turns.barge_in import BargeIn
from bot.turns.barge_in_words import Meaning


class BackchannelFilter(FrameProcessor):
    """Before the user aggregator: backchannels and echo said over the bot never become turns.

    A final transcript heard over the bot that is a backchannel becomes a
    `UserBackchannelFrame` (kept out of the context, reported as such); one that is the bot's
    own words is dropped. Either way the bot goes on. Interim transcripts of either are
    dropped too. Everything else passes. A final transcript the canceller cannot measure yet
    waits for it (`BargeIn.awaits_echo_verdict`), looked at again with each audio frame.
    """

    def __init__(self, barge_in: BargeIn, **kwargs):
        super().__init__(**kwargs)
        self._barge_in = barge_in
        self._waiting: list[TranscriptionFrame] = []
        self._waiting_since = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if self._waiting and not self._barge_in.awaits_echo_verdict(
            self._waiting[0].text, self._waiting_since
        ):
            waiting, self._waiting = self._waiting, []
            for words in waiting:
                await self._judge(words, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            self._barge_in.bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._barge_in.bot_speaking = False
        elif isinstance(frame, TranscriptionFrame) and self._barge_in.judging_words:
            now = time.monotonic()
            if self._waiting or self._barge_in.awaits_echo_verdict(frame.text, now):
                if not self._waiting:
                    logger.debug(f"{self}: {frame.text!r} waits for the echo's verdict")
                    self._waiting_since = now
                self._waiting.append(frame)
                return
            await self._judge(frame, direction)
            return
        elif isinstance(frame, InterimTranscriptionFrame) and self._barge_in.judging_words:
            await self._judge(frame, direction)
            return
        await self.push_frame(frame, direction)

    async def _judge(self, frame: Frame, direction: FrameDirection) -> None:
        meaning = self._barge_in.meaning(frame.text)
        self._barge_in.heard = meaning
        if meaning in (Meaning.BACKCHANNEL, Meaning.ECHO):
            await self._let_pass(frame, meaning)
        else:
            await self.push_frame(frame, direction)

    async def _let_pass(self, frame: Frame, meaning: Meaning) -> None:
        if isinstance(frame, InterimTranscriptionFrame):
            return  # the final transcript decides
        logger.debug(f"{self}: {meaning.value} over the bot: {frame.text!r}")
        if meaning is Meaning.BACKCHANNEL:
            self._barge_in.backchannels += 1
            await self.push_frame(UserBackchannelFrame(frame.text, frame.user_id, frame.timestamp))
        else:
            self._barge_in.echoes += 1
        self._barge_in.gate.release()
