"""A VAD whose bar follows the room: higher in a loud room, lower in a quiet one.

Silero's speech probability is only half of Pipecat's VAD decision: a frame also has to be
louder than `min_volume` (loudness normalised from -110..-10 LUFS to 0..1; the default 0.6
is -50 LUFS). One fixed bar is wrong somewhere: in a café the chatter behind the user
passes it (and Silero often calls babble speech), in a quiet room a soft voice may not.
`AdaptiveVADAnalyzer` measures the room: its noise floor is the 20th percentile of the
loudness over the last `window_secs` (a reading every 0.1 s) of what is not the user: the
time the VAD has been quiet for a whole loudness block, and "speech" that has gone on for
`endless_speech_secs` without a pause, which a person does not do but a room of chatter
does. (Readings of the user's own words raised the bar to their voice mid-question, and
the words after the next pause were lost.) It sets

    min_volume = noise floor + margin, within [low, high]
    confidence = base confidence, + `noisy_confidence_step` once the floor is above `noisy_floor`

changing them by a clear step only, and only while the VAD is quiet or what it hears now
is under the new bar (Pipecat resets the VAD's state on a change: that must not cut a
user's words short). Measured in bench/RESULTS.md ("Adaptive VAD").

While the bot talks into a microphone that hears none of its echo (`over_bot`), speech
starts after `start_secs_over_bot` instead: there a start only pauses the bot
(bot/turns/barge_in.py), undone if the sound has no words, and the sooner it pauses the less of
the bot talks over the user. Switched while the VAD is quiet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
from loguru import logger
from pipecat.audio.utils import calculate_audio_volume
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from bot.local.silero_vad import SharedSileroVADAnalyzer

FRAME_SECS = 0.02


class AdaptiveVADAnalyzer(SharedSileroVADAnalyzer):
    def __init__(
        self,
        *,
        margin: float = 0.05,
        low: float = 0.45,
        high: float = 0.85,
        noisy_floor: float = 0.6,
        noisy_confidence_step: float = 0.1,
        window_secs: float = 6.0,
        step: float = 0.03,
        endless_speech_secs: float = 6.0,
        start_secs_over_bot: float | None = None,
        over_bot: Callable[[], bool] = lambda: False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._base = self.params
        self._start_secs_over_bot = start_secs_over_bot
        self._over_bot = over_bot
        self._margin, self._low, self._high = margin, low, high
        self._noisy_floor, self._noisy_step = noisy_floor, noisy_confidence_step
        self._step = step
        self._volumes: deque[float] = deque(maxlen=int(window_secs / (5 * FRAME_SECS)))
        self._window = bytearray()
        self._frames = 0
        self._endless_frames = int(endless_speech_secs / FRAME_SECS)
        self._run_state: VADState | None = None
        self._run_frames = 0  # how long the VAD has been in `_run_state`
        self.noise_floor: float | None = None

    def _run_analyzer(self, buffer: bytes) -> VADState:
        if self._run_state in (None, VADState.QUIET):
            self._follow_the_bot()
        state = super()._run_analyzer(buffer)
        # Loudness over the last 0.4 s (a BS.1770 gating block), one reading per 20 ms.
        self._window += buffer
        block = int(0.4 * self.sample_rate) * 2
        if len(self._window) > block:
            del self._window[: len(self._window) - block]
        self._frames += 1
        self._run_frames = self._run_frames + 1 if state == self._run_state else 1
        self._run_state = state
        # A reading every 0.1 s (~0.3 ms each) is plenty for a noise floor.
        if len(self._window) == block and self._frames % 5 == 0 and self._hears_the_room(block):
            volume = calculate_audio_volume(bytes(self._window), self.sample_rate)
            self._volumes.append(volume)
            if len(self._volumes) >= self._volumes.maxlen // 3:
                self._adapt(state, volume)
        return state

    def _follow_the_bot(self) -> None:
        if self._start_secs_over_bot is None:
            return
        over_bot = self._over_bot()
        start_secs = self._start_secs_over_bot if over_bot else self._base.start_secs
        current = self.params
        if start_secs != current.start_secs:
            self.set_params(
                VADParams(
                    confidence=current.confidence,
                    start_secs=start_secs,
                    stop_secs=current.stop_secs,
                    min_volume=current.min_volume,
                )
            )

    def _hears_the_room(self, block_bytes: int) -> bool:
        if self._run_state == VADState.QUIET:
            return self._run_frames * FRAME_SECS * self.sample_rate * 2 >= block_bytes
        return self._run_state == VADState.SPEAKING and self._run_frames >= self._endless_frames

    def _adapt(self, state: VADState, now: float) -> None:
        self.noise_floor = float(np.percentile(self._volumes, 20))
        min_volume = min(self._high, max(self._low, self.noise_floor + self._margin))
        confidence = self._base.confidence + (
            self._noisy_step if self.noise_floor > self._noisy_floor else 0.0
        )
        current = self.params
        changed = (
            abs(min_volume - current.min_volume) >= self._step or confidence != current.confidence
        )
        if changed and (state == VADState.QUIET or now < min_volume):
            logger.debug(
                f"{self}: room at {self.noise_floor:.2f}: "
                f"VAD bar {min_volume:.2f}, confidence {confidence:.2f}"
            )
            self.set_params(
                VADParams(
                    confidence=confidence,
                    start_secs=current.start_secs,
                    stop_secs=current.stop_secs,
                    min_volume=min_volume,
                )
            )
