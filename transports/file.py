"""A Pipecat transport that holds a conversation from WAV files.

The input plays a script of user utterances into the pipeline as 20 ms microphone
frames; the output "plays" the bot's audio into a buffer that becomes a WAV.

Timing. In real time (default) the microphone delivers one frame every 20 ms and the
bot's audio plays at its own speed, as through a sound card. With `fast`, speech is
delivered as fast as the pipeline takes it and the bot's audio is not paced; silence
is still real time, because turn detection waits out silence in audio time.

When does the next utterance start? Either at an absolute time (`at`, seconds since
the conversation started), or `after_bot_audio` seconds into the bot's answer to the
previous one (counted in bot audio played, so a barge-in lands at the same point of
the answer however slow the machine), or, by default, once the bot has answered and
fallen silent for `reply_pause_secs` with its answer complete (the LLM's reply ended, not
only paused), like a person taking turns; after an utterance with `reply_expected=False`
(a backchannel), once the bot has finished what it was saying and fallen silent.

Echo. With `echo_gain_db`, the microphone also hears the bot's audio as it plays,
`echo_delay_secs` later and that much quieter (transports/file_echo.py); real time only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from transports.file_echo import PlayedEcho
from transports.wav import write_wav

FRAME_SECS = 0.02


@dataclass
class Utterance:
    audio: np.ndarray  # int16 mono at the input sample rate
    name: str = ""
    at: float | None = None
    after_bot_audio: float | None = None
    # False for what the bot is not to answer (a backchannel, a cough over its answer): what
    # comes next waits for the bot to finish and fall silent, not for a new answer.
    reply_expected: bool = True


class FileTransportParams(TransportParams):
    audio_in_enabled: bool = True
    audio_out_enabled: bool = True
    fast: bool = False
    lead_in_secs: float = 0.5
    reply_pause_secs: float = 1.0
    answer_timeout_secs: float = 60.0
    # Silence after the last answer before the conversation ends.
    tail_secs: float = 0.5
    # The bot's own voice in the microphone: None for none (headphones).
    echo_gain_db: float | None = None
    echo_delay_secs: float = 0.15


@dataclass
class _Playback:
    """What the output has played, shared with the input to schedule utterances."""

    sample_rate: int = 0
    samples_played: int = 0
    bot_speaking: bool = False
    bot_started_at_sample: int = 0
    bot_stopped_at: float | None = None
    bot_starts: int = 0
    # An LLM answer has reached the output and not yet ended: the bot may fall silent
    # mid-answer while the LLM writes on, and that silence is not the user's turn yet.
    answer_open: bool = False
    interruptions: int = 0
    # Where each interruption cut the bot's audio: byte offsets into `FileTransport.bot_audio`.
    cut_offsets: list[int] = field(default_factory=list)
    # Bot audio frames played between an interruption and the bot falling silent.
    frames_after_interruption: int = 0
    draining_interrupted_answer: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()

    async def wait_change(self, timeout: float) -> None:
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            pass


class FedInputTransport(BaseInputTransport):
    """An input transport whose microphone is a task of its own (`_feed`), started with
    `start_feeding()` and cancelled when the pipeline stops."""

    def __init__(self, params: TransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self._feed_task: asyncio.Task | None = None

    def start_feeding(self, name: str) -> None:
        self._feed_task = self.create_task(self._feed(), name)

    async def _feed(self) -> None:
        raise NotImplementedError

    async def stop(self, frame):
        await self._cancel_feed()
        await super().stop(frame)

    async def cancel(self, frame):
        await self._cancel_feed()
        await super().cancel(frame)

    async def _cancel_feed(self):
        if self._feed_task:
            await self.cancel_task(self._feed_task)
            self._feed_task = None


class FileInputTransport(FedInputTransport):
    def __init__(self, transport: FileTransport, params: FileTransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self._transport = transport
        self._file_params: FileTransportParams = params
        self._silence = b""
        self._echo: PlayedEcho | None = None
        self._next_frame_at = 0.0

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)
        self._silence = b"\x00\x00" * int(self.sample_rate * FRAME_SECS)
        if self._file_params.echo_gain_db is not None:
            if self._file_params.fast:
                raise ValueError("an echo needs real-time playback (fast=False)")
            self._echo = PlayedEcho(
                self._file_params.echo_gain_db, self._file_params.echo_delay_secs, self.sample_rate
            )
        self.start_feeding("file-input-feed")
        await self._transport._call_event_handler("on_client_connected", self)
        # Like a client that has set up and can hear the bot now (RTVI's client-ready):
        # the session greets it, as it greets a browser.
        ready = {
            "label": "rtvi-ai",
            "type": "client-ready",
            "id": "file",
            "data": {"version": "2.2.0"},
        }
        await self.broadcast_frame(InputTransportMessageFrame, message=ready)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        # The output announces bot speech upstream; we are the first processor.
        playback = self._transport.playback
        if isinstance(frame, BotStartedSpeakingFrame):
            playback.bot_speaking = True
            playback.bot_starts += 1
            playback.bot_started_at_sample = playback.samples_played
            playback.notify()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            playback.bot_speaking = False
            playback.draining_interrupted_answer = False
            playback.bot_stopped_at = time.monotonic()
            playback.notify()

    async def _push_mic(self, pcm: bytes) -> None:
        if self._echo is not None:
            transport = self._transport
            pcm = self._echo.mix(
                pcm, transport.bot_audio, transport.playback.sample_rate, transport.output_began
            )
        await self.push_audio_frame(
            InputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1)
        )

    async def _tick(self) -> None:
        """Wait until the next frame is due on the microphone's clock, which, like a sound
        card's, neither drifts nor skips: a late frame is followed by early ones."""
        now = time.monotonic()
        if not self._next_frame_at:
            self._next_frame_at = now  # the microphone's clock starts with its first frame
        self._next_frame_at = max(self._next_frame_at, now - 1.0) + FRAME_SECS
        await asyncio.sleep(max(0.0, self._next_frame_at - now))

    async def _silence_for(self, secs: float) -> None:
        """Real-time silence, as a live microphone would deliver it."""
        for _ in range(max(1, round(secs / FRAME_SECS))):
            await self._push_mic(self._silence)
            await self._tick()

    async def _speak(self, utterance: Utterance) -> None:
        n = int(self.sample_rate * FRAME_SECS)
        audio = utterance.audio
        for offset in range(0, len(audio), n):
            chunk = audio[offset : offset + n]
            if len(chunk) < n:
                chunk = np.pad(chunk, (0, n - len(chunk)))
            await self._push_mic(chunk.tobytes())
            if self._file_params.fast:
                await asyncio.sleep(0)
            else:
                await self._tick()
        if self._file_params.fast:
            self._next_frame_at = time.monotonic()
        self._transport.utterances_sent += 1
        logger.debug(f"{self}: sent utterance {utterance.name or self._transport.utterances_sent}")

    async def _wait_until(self, ready, timeout: float, what: str) -> None:
        """Keep the microphone live (silence) until `ready()` or the timeout."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                logger.warning(f"{self}: gave up waiting for {what} after {timeout:.0f}s")
                return
            await self._push_mic(self._silence)
            await self._tick()

    def _answered(self, starts_before: int, reply_expected: bool = True):
        playback = self._transport.playback
        pause = self._file_params.reply_pause_secs

        def ready() -> bool:
            return (
                (playback.bot_starts > starts_before or not reply_expected)
                and not playback.bot_speaking
                and not playback.answer_open
                and playback.bot_stopped_at is not None
                and time.monotonic() - playback.bot_stopped_at >= pause
            )

        return ready

    def _into_answer(self, starts_before: int, secs: float):
        playback = self._transport.playback

        def ready() -> bool:
            if playback.bot_starts <= starts_before or not playback.bot_speaking:
                return False
            played = playback.samples_played - playback.bot_started_at_sample
            return played >= secs * playback.sample_rate

        return ready

    async def _feed(self) -> None:
        script = self._transport.script
        began = time.monotonic()
        await self._silence_for(self._file_params.lead_in_secs)
        starts_before = self._transport.playback.bot_starts
        for index, utterance in enumerate(script):
            if utterance.at is not None:
                await self._wait_until(
                    lambda u=utterance: time.monotonic() - began >= u.at,
                    utterance.at + self._file_params.answer_timeout_secs,
                    f"t={utterance.at}s",
                )
            elif index > 0:
                if utterance.after_bot_audio is not None:
                    await self._wait_until(
                        self._into_answer(starts_before, utterance.after_bot_audio),
                        self._file_params.answer_timeout_secs,
                        f"{utterance.after_bot_audio}s into the bot's answer",
                    )
                else:
                    await self._wait_until(
                        self._answered(starts_before, script[index - 1].reply_expected),
                        self._file_params.answer_timeout_secs,
                        "the bot's answer",
                    )
            starts_before = self._transport.playback.bot_starts
            await self._speak(utterance)
        await self._wait_until(
            self._answered(starts_before, script[-1].reply_expected),
            self._file_params.answer_timeout_secs,
            "the last answer",
        )
        await self._silence_for(self._file_params.tail_secs)
        logger.debug(f"{self}: script finished, ending the conversation")
        await self.push_frame(EndWorkerFrame(reason="file conversation finished"))


class FileOutputTransport(BaseOutputTransport):
    def __init__(self, transport: FileTransport, params: FileTransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self._transport = transport
        self._file_params: FileTransportParams = params
        self._began = 0.0
        self._next_play = 0.0

    @property
    def began(self) -> float:
        return self._began

    async def start(self, frame: StartFrame):
        await super().start(frame)
        self._transport.playback.sample_rate = self.sample_rate
        self._began = time.monotonic()
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InterruptionFrame):
            playback = self._transport.playback
            playback.interruptions += 1
            playback.cut_offsets.append(len(self._transport.bot_audio))
            playback.draining_interrupted_answer = playback.bot_speaking
            playback.answer_open = False  # the rest of the answer will not be played
        await super().process_frame(frame, direction)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ):
        # Out of the output, frames come in the order their audio was played.
        answer_marks = (LLMFullResponseStartFrame, LLMFullResponseEndFrame)
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, answer_marks):
            self._transport.playback.answer_open = isinstance(frame, LLMFullResponseStartFrame)
            self._transport.playback.notify()
        await super().push_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        playback = self._transport.playback
        buffer = self._transport.bot_audio
        now = time.monotonic()
        if not self._file_params.fast:
            # Keep the bot audio on the conversation's timeline: silence fills the gaps.
            position = int((now - self._began) * self.sample_rate) * 2
            if position > len(buffer):
                buffer.extend(b"\x00" * (position - len(buffer)))
        buffer.extend(frame.audio)
        if playback.draining_interrupted_answer:
            playback.frames_after_interruption += 1
        playback.samples_played += frame.num_frames
        playback.notify()
        if not self._file_params.fast:
            # Play at the audio's own speed, as a sound card would.
            duration = frame.num_frames / self.sample_rate
            self._next_play = max(self._next_play, now) + duration
            await asyncio.sleep(max(0.0, self._next_play - time.monotonic() - duration))
        return True


class FileTransport(BaseTransport):
    """Input from a script of utterances, output into memory (see module docstring)."""

    def __init__(
        self, script: list[Utterance], params: FileTransportParams | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.params = params or FileTransportParams()
        if not script:
            raise ValueError("a file conversation needs at least one utterance")
        self.script = script
        self.playback = _Playback()
        self.bot_audio = bytearray()
        self.utterances_sent = 0
        self._input: FileInputTransport | None = None
        self._output: FileOutputTransport | None = None
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self) -> FrameProcessor:
        if not self._input:
            self._input = FileInputTransport(self, self.params, name=self._input_name)
        return self._input

    def output(self) -> FrameProcessor:
        if not self._output:
            self._output = FileOutputTransport(self, self.params, name=self._output_name)
        return self._output

    @property
    def output_began(self) -> float | None:
        """When the output started playing (the bot audio buffer's time zero)."""
        return self._output.began if self._output else None

    @property
    def output_sample_rate(self) -> int:
        return self.playback.sample_rate

    def write_bot_audio(self, path: Path) -> None:
        write_wav(path, bytes(self.bot_audio), self.playback.sample_rate or 24000)
