"""The user's words are never dropped by an interruption.

A turn that starts over the bot broadcasts an interruption (Pipecat's user aggregator), and
every processor it reaches empties its queue of interruptible frames. A final transcript
still on its way from the STT then is lost: "Wait." starts the turn, and the question said
right after it, transcribed in the same moment (a slow first transcript, or two finals
from Deepgram in a row), never reaches the context. Pipecat's STT services already mark a
final transcript (`finalized`) as they push it; this marks it uninterruptible too, as Pipecat
does for frames that must survive an interruption (docs/upstream.md).
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection


class UninterruptibleTranscriptsMixin:
    """For an STT service: its final transcripts reach the user aggregator whatever
    interruption is broadcast meanwhile."""

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if isinstance(frame, TranscriptionFrame):
            frame.interruptible = False
        await super().push_frame(frame, direction)
