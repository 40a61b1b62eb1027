"""A final transcript survives the interruption of the turn it lands in.

"Wait." over the bot, then at once "What is the capital of Spain?": when the first
transcript comes late (Whisper unsure of it, on a busy machine), both leave the recogniser
together, and the interruption the first one's turn broadcasts empties every queue between
the recogniser and the context. The question must still be in the turn (no words lost).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601

from bot.local.whisper_stt import SharedWhisperSTTService

HEARD = ["Wait.", "What is the capital of Spain?"]


class LateWhisper(SharedWhisperSTTService):
    """The local recogniser, its two transcripts coming out back to back (the recognition
    itself stood in for: the race is in what happens to them after)."""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        for text in HEARD:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601())


async def test_words_right_behind_the_ones_that_start_a_turn_reach_it(models):
    context = LLMContext()
    user = LLMUserAggregator(
        context,
        params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(
                # Words start the turn, as over the bot (bot/turns/barge_in.py).
                start=[TranscriptionUserTurnStartStrategy()],
                stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.2)],
            )
        ),
    )
    stt = LateWhisper(model=models.whisper)
    # A hop between the recogniser and the context, as the pipeline's processors are.
    pipeline = Pipeline([stt, IdentityFilter(), user])
    speech = InputAudioRawFrame(audio=b"\x00\x00" * 3200, sample_rate=16000, num_channels=1)
    segment = [VADUserStartedSpeakingFrame(), speech, VADUserStoppedSpeakingFrame()]
    await run_test(pipeline, frames_to_send=[*segment, SleepFrame(1.0)])  # the turn's 0.2 s end
    said = " ".join(str(m["content"]) for m in context.get_messages() if m["role"] == "user")
    assert "Spain" in said and "Wait" in said, context.get_messages()
