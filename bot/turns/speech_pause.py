"""When speech pauses, judged from the audio itself, before the VAD's stop_secs have passed.

The VAD reports a stop only after stop_secs of silence; the end of an utterance is
usually clear ~100 ms after the last word. Work that the turn's end will need (a
transcript, the end-of-turn verdict) can start there and be ready when the stop comes.
"""

from __future__ import annotations

import numpy as np

QUIET_BELOW_PEAK = 0.05  # a frame 26 dB under the utterance's loudest is "quiet"
# This many quiet 20 ms frames in a row suggest the speech ended: longer than the gaps
# between words, shorter than the VAD's stop_secs.
QUIET_FRAMES = 5


class PauseDetector:
    """Counts the quiet frames at the end of the audio heard since `reset()`."""

    def __init__(self, frames: int = QUIET_FRAMES, below_peak: float = QUIET_BELOW_PEAK):
        self.frames = frames
        self.below_peak = below_peak
        self.reset()

    def reset(self) -> None:
        self.peak = 0.0
        self.quiet_frames = 0

    def update(self, pcm: bytes) -> bool:
        """Take one frame of int16 PCM; True on the frame that makes a pause."""
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        level = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
        self.peak = max(self.peak, level)
        quiet = level < self.peak * self.below_peak
        self.quiet_frames = self.quiet_frames + 1 if quiet else 0
        return self.quiet_frames == self.frames

    @property
    def quiet(self) -> bool:
        """The latest frame was quiet."""
        return self.quiet_frames > 0
