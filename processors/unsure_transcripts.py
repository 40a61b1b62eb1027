"""A turn whose words the recogniser was unsure of is asked again, not answered.

Given a voice or a room it does not know, Whisper tiny.en can hear another sentence ("What
is the capital of the room?") and the LLM answers it faithfully: a confident wrong answer,
worse than a question back. Whisper's own confidence tells most of these apart: on the
spoken-QA yardstick, transcripts under a mean token log-probability of -0.9 were misheard
about five times as often as not (-0.75 once Whisper reads the conversation, which makes it
surer), and real recordings score -0.3 to -0.5 (docs/answers.md).
The LLM cannot tell them apart itself: told which words were unsure, the local model
answered them all the same.

So `UnsureTranscripts`, just before the user aggregator, notes how sure each transcript of
the turn was (`result["avg_logprob"]`, which the local Whisper services set; a cloud STT's
transcripts count as sure), and `EmptyTurnReply` after the aggregator answers a turn made
only of unsure words with its fixed "Sorry, I didn't catch that", once in a row: a second
unsure turn goes to the LLM, whose best guess beats asking forever.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, TranscriptionFrame, UserStartedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


def is_unsure(frame: TranscriptionFrame, min_logprob: float) -> bool:
    result = frame.result if isinstance(frame.result, dict) else {}
    logprob = result.get("avg_logprob")
    return isinstance(logprob, (int, float)) and logprob < min_logprob


class UnsureTranscripts(FrameProcessor):
    """Notes how sure the recogniser was of each transcript of the coming user turn."""

    def __init__(self, min_logprob: float, **kwargs):
        super().__init__(**kwargs)
        self._min_logprob = min_logprob
        self._unsure: list[bool] = []  # one per transcript of the turn
        self._asked_again = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, UserStartedSpeakingFrame):  # (the aggregator sends it upstream)
            self._unsure = []
        elif isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._unsure.append(is_unsure(frame, self._min_logprob))
        await self.push_frame(frame, direction)

    def take_turn(self) -> bool:
        """Called once per user turn sent to the LLM: whether to ask it again instead."""
        unsure = bool(self._unsure) and all(self._unsure)
        self._unsure = []
        ask_again = unsure and not self._asked_again
        self._asked_again = ask_again
        return ask_again
