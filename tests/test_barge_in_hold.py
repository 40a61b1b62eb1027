"""How long the bot, paused by speech over it, waits for what the speech was
(bot/turns/barge_in_start.py): the STT's verdict decides, not the clock, when the STT answers
every segment; the clock decides for one that may never answer."""

from __future__ import annotations

import time

import pytest
from pipecat.frames.frames import (
    UserBackchannelFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.config import Settings
from bot.turns.barge_in import BargeIn, NoWordsFrame
from bot.turns.barge_in_start import HOLD_ROUNDS, BargeInStartStrategy
from bot.turns.barge_in_words import BargeInPolicy
from tests.support.barge_in import SAID, SaidLately

MAX_HOLD_SECS = 0.3


class PausedGate(SaidLately):
    """The speech gate, the bot mid-sentence: what the hold did to it, in order."""

    def __init__(self):
        super().__init__(SAID)
        self.cut_off, self.done, self.at = True, [], {}

    def _did(self, what: str) -> None:
        self.done.append(what)
        self.at[what] = time.monotonic()

    def hold(self) -> None:
        self.held = True
        self._did("hold")

    async def replay_sentence(self) -> None:
        self.held = False
        self._did("said again")


async def hold_over_the_bot(*frames, stt_answers_every_segment: bool = True) -> PausedGate:
    """Speech over the talking bot (a VAD segment), then `frames`."""
    gate = PausedGate()
    barge_in = BargeIn(gate, BargeInPolicy.from_settings(Settings(_env_file=None)))
    barge_in.bot_speaking = True
    barge_in.stt_answers_every_segment = stt_answers_every_segment
    start = BargeInStartStrategy(barge_in=barge_in, max_hold_secs=MAX_HOLD_SECS)
    user = LLMUserAggregator(
        LLMContext(),
        params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(
                start=[start], stop=[SpeechTimeoutUserTurnStopStrategy()]
            )
        ),
    )
    speech = [VADUserStartedSpeakingFrame(), SleepFrame(0.1), VADUserStoppedSpeakingFrame()]
    await run_test(user, frames_to_send=[*speech, *frames])
    return gate


@pytest.mark.parametrize("waited_holds", [1.5, 2.5])  # within HOLD_ROUNDS (3)
async def test_a_backchannel_transcribed_late_lets_the_bot_go_on(waited_holds):
    """Whisper's "Okay." after the hold's own limit (a busy machine): the bot was still
    waiting for it, so it goes on from where it paused instead of saying its sentence again."""
    late = SleepFrame(waited_holds * MAX_HOLD_SECS)
    okay = UserBackchannelFrame("Okay.", "user", "now")
    gate = await hold_over_the_bot(late, okay, SleepFrame(0.5))
    assert gate.done == ["hold"]


async def test_no_words_found_late_has_the_sentence_said_again():
    late = SleepFrame(1.5 * MAX_HOLD_SECS)
    gate = await hold_over_the_bot(late, NoWordsFrame(), SleepFrame(0.2))
    assert gate.done == ["hold", "said again"]
    # When the STT said so, not when the hold's first limit ran out.
    assert gate.at["said again"] - gate.at["hold"] >= 1.5 * MAX_HOLD_SECS


async def test_a_verdict_that_never_comes_ends_the_hold():
    """A segment whose transcription failed has no verdict: the bot goes on in the end."""
    gate = await hold_over_the_bot(SleepFrame((HOLD_ROUNDS + 0.5) * MAX_HOLD_SECS))
    assert gate.done == ["hold", "said again"]


async def test_without_an_stt_that_answers_every_segment_the_clock_decides():
    gate = await hold_over_the_bot(
        SleepFrame(1.5 * MAX_HOLD_SECS), UserBackchannelFrame("Okay.", "user", "now"),
        stt_answers_every_segment=False,
    )
    assert gate.done == ["hold", "said again"]
