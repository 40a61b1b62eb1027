"""Ends the microphone audio's trip once the turn taking has heard it.

Pipecat passes every input audio frame down the whole pipeline, through the LLM, the TTS
and the output transport, which ignore it. Each of those hops costs a push, a processing
and a queued event per observer, 50 times a second per session: past the user aggregator
(STT, VAD and turn detection are behind it) only a recorder of the user's side needs the
audio, so the pipeline places this stop there when it has no such recorder.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class InputAudioStop(FrameProcessor):
    """Consumes `InputAudioRawFrame`s; every other frame passes."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)
