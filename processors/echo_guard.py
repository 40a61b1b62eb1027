"""Keep the bot from interrupting itself on the echo of its own voice.

Without headphones the microphone hears the bot; the browser's echo cancellation
removes most of it, and Silero VAD fires even on what is left (measured: -26 dB of
echo still starts "speech" several times a minute). So, while the bot is speaking and
for an echo tail after it stops, a user turn starts only when the microphone is louder
than the echo of the bot's recent audio could be: its level must reach the bot's output
level minus `margin_db`.
That is a level-based double-talk detector (like Geigel's), referenced to what the
bot actually sent. Echo sits far below that line (-20 dB in the measured scenario),
a person talking over the bot sits near or above it.

`BotAudioTap` (after `transport.output()`) records the level of every bot audio frame
that leaves the pipeline; `EchoGuardedVADStartStrategy` reads it.
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import VADUserTurnStartStrategy

SILENCE_DB = -120.0


def rms_db(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16)
    if not len(samples):
        return SILENCE_DB
    rms = math.sqrt(float(np.dot(samples, samples.astype(np.float64))) / len(samples))
    return 20 * math.log10(rms / 32768.0) if rms > 0 else SILENCE_DB


class BotAudioLevel:
    """The bot's recent output levels: the reference any echo is compared with.

    The echo of a frame reaches us after the client's playout buffer, the room and the
    network, and later still when this server runs behind real time: the window keeps
    each frame as a reference for that long (the echo tail).
    """

    def __init__(self, window_secs: float = 1.5):
        self.window_secs = window_secs
        self._levels: deque[tuple[float, float]] = deque()

    def add(self, level_db: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._levels.append((now, level_db))
        while self._levels and now - self._levels[0][0] > self.window_secs:
            self._levels.popleft()

    def reference_db(self, now: float | None = None) -> float | None:
        """Loudest recent bot frame, or None if the bot has been quiet for the window."""
        now = time.monotonic() if now is None else now
        recent = [level for t, level in self._levels if now - t <= self.window_secs]
        return max(recent) if recent else None


class BotAudioTap(FrameProcessor):
    """Records the level of each bot audio frame the output transport let out."""

    def __init__(self, level: BotAudioLevel, **kwargs):
        super().__init__(**kwargs)
        self._level = level

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self._level.add(rms_db(frame.audio))
        await self.push_frame(frame, direction)


# The guard compares the microphone's level over this window with the bot's echo level:
# a voice that rises above the echo crosses the bar within about this long.
MIC_WINDOW_SECS = 0.2


class EchoGuardedVADStartStrategy(VADUserTurnStartStrategy):
    """VAD turn start that ignores speech no louder than the echo of the bot's recent audio."""

    def __init__(
        self,
        *,
        bot_level: BotAudioLevel,
        margin_db: float = 10.0,
        mic_window_secs: float = MIC_WINDOW_SECS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._bot_level = bot_level
        self._margin_db = margin_db
        self._mic: deque[float] = deque()  # mean-square of recent mic frames
        self._mic_window_secs = mic_window_secs
        self._vad_speaking = False
        self._held = False  # VAD heard speech we judged to be echo
        self._drop_transcript = False
        self._in_turn = False
        self.suppressed = 0

    async def handle_user_turn_started(self):
        await super().handle_user_turn_started()
        self._in_turn, self._held = True, False

    async def handle_user_turn_stopped(self):
        await super().handle_user_turn_stopped()
        self._in_turn = False

    def _mic_db(self) -> float:
        if not self._mic:
            return SILENCE_DB
        mean_square = sum(self._mic) / len(self._mic)
        return 10 * math.log10(mean_square / 32768.0**2) if mean_square > 0 else SILENCE_DB

    def _louder_than_echo(self) -> bool:
        # While the bot speaks, and for the echo tail after it stops (its last words are
        # still on their way back), only speech above the echo's ceiling counts.
        reference = self._bot_level.reference_db()
        return reference is None or self._mic_db() >= reference - self._margin_db

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame):
            self._remember_mic(frame)
            if self._held and self._vad_speaking and self._louder_than_echo():
                return await self._start()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_speaking = True
            if self._louder_than_echo():
                return await self._start()
            self._held = True
            self.suppressed += 1
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_speaking = False
            if self._held:  # that segment was echo: its transcript is not the user's
                self._held, self._drop_transcript = False, True
        elif isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
            if self._drop_transcript and not self._in_turn:
                if isinstance(frame, TranscriptionFrame):
                    self._drop_transcript = False
                await self.trigger_reset_aggregation()
        return ProcessFrameResult.CONTINUE

    def _remember_mic(self, frame: InputAudioRawFrame) -> None:
        samples = np.frombuffer(frame.audio, dtype=np.int16)
        if not len(samples):
            return
        self._mic.append(float(np.dot(samples, samples.astype(np.float64))) / len(samples))
        frames_in_window = max(1, round(self._mic_window_secs * frame.sample_rate / len(samples)))
        while len(self._mic) > frames_in_window:
            self._mic.popleft()

    async def _start(self) -> ProcessFrameResult:
        self._held = False
        await self.trigger_user_turn_started()
        return ProcessFrameResult.STOP
