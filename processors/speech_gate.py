"""The bot's speech, released in real time so that it can be paused and picked up again.

A TTS delivers a sentence's audio faster than real time, and the output transport queues
all of it: once queued it can only be thrown away (an interruption), not paused. This
gate, just before `transport.output()`, keeps the bot's frames in order and lets audio
out at the pace it plays, `lead_secs` ahead. That makes three things possible:

- `hold()`: the bot falls silent at once (within the lead and the transport's own chunk)
  without losing anything, while what the user said is being worked out;
- `release()`: it goes on from where it stopped (a backchannel, or its own echo);
- `replay_sentence()`: it stops its output for real (an interruption downstream only:
  the client drops what it has queued; the LLM and TTS upstream carry on) and says the
  interrupted sentence again, then the rest (a cough or a door cut it off).

Everything else (text, TTS and LLM markers) keeps its place behind the audio it follows.
A real interruption (an `InterruptionFrame` from upstream) empties the gate.

The lead grows by how late the event loop has lately woken the gate (a loaded server), so
that the client's playout buffer is not left empty, and shrinks back as the load goes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from loguru import logger
from pipecat.frames.frames import (
    AggregatedTextFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

CHUNK_SECS = 0.02
# How far ahead of real time the gate lets audio go: the transport sends a 40 ms chunk
# ahead of playing it, so this is about what remains audible after a hold.
LEAD_SECS = 0.04
# ...plus how late the event loop has lately woken the gate (many sessions on one loop),
# up to this much: audio that arrives later than a client's playout buffer (a browser's
# ~80 ms) leaves a gap in the bot's voice. A hold then leaves that much more audible.
MAX_EXTRA_LEAD_SECS = 0.2
LATENESS_HALF_LIFE_SECS = 10.0
# Recent sentences kept as "what the bot just said" (its echo can only be those).
RECENT_TEXT_SECS = 6.0
# Sentences remembered for a long stretch of speech heard over the bot, whose echo may
# reach back further than RECENT_TEXT_SECS before now.
KEPT_TEXT_SECS = 30.0
# ...and no more text than anyone says in that time (about 15 characters a second): a
# sentence whose audio was short or missing (a TTS that said nothing) is not held for 30 s.
KEPT_TEXT_CHARS = 1000
# A sentence is said again from its start, across the chunks the TTS spoke it in (a reply's
# first sentence goes to the TTS in two: bot/text_aggregation.py; a TTS with word timestamps
# sends a text frame per word), unless it has gone on longer than this: then from its
# latest chunk.
MAX_REPLAY_SECS = 10.0
SENTENCE_END = ".!?"


class WakeLateness:
    """The worst lateness of recent wake-ups, forgotten with a half-life."""

    def __init__(self, half_life_secs: float = LATENESS_HALF_LIFE_SECS):
        self._half_life = half_life_secs
        self._secs = 0.0
        self._at = 0.0

    def observe(self, late_secs: float, now: float) -> None:
        self._secs = max(late_secs, self.at(now))
        self._at = now

    def at(self, now: float) -> float:
        return self._secs * 0.5 ** ((now - self._at) / self._half_life)


class SpeechGate(FrameProcessor):
    def __init__(
        self,
        *,
        lead_secs: float = LEAD_SECS,
        recent_secs: float = RECENT_TEXT_SECS,
        max_replay_secs: float = MAX_REPLAY_SECS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._lead = lead_secs
        self._lateness = WakeLateness()
        self._max_replay_secs = max_replay_secs
        self._recent_secs = recent_secs
        self._queue: deque[Frame] = deque()
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._held = False
        self._play_until = 0.0  # when the audio released so far has played
        self._sentence: list[OutputAudioRawFrame] = []  # audio of the chunk being said
        # ...and of the chunks of its sentence said before it (its first phrase).
        self._sentence_before: list[OutputAudioRawFrame] = []
        self._recent_text: deque[tuple[float, str]] = deque()
        # The text the TTS announced ahead of the audio now playing: its own TTSTextFrame
        # follows that audio only once the whole chunk is synthesised.
        self._announced: str | None = None
        self.holds = 0
        self.replays = 0

    @property
    def lead_secs(self) -> float:
        """How far ahead of real time audio goes out now."""
        return self._lead + min(MAX_EXTRA_LEAD_SECS, self._lateness.at(time.monotonic()))

    @property
    def held(self) -> bool:
        return self._held

    @property
    def cut_off(self) -> bool:
        """Whether a sentence is part-said (held mid-way, or more of it still to come)."""
        return bool(self._sentence) or any(isinstance(f, OutputAudioRawFrame) for f in self._queue)

    def recent_text(self, since: float | None = None) -> str:
        """What the bot said in the last seconds (before `since`, a `time.monotonic()`, if
        earlier: speech heard since then may hold the echo of all of it) and the sentence
        it is saying now.

        Only the first text still queued: it follows the audio being played. The sentences
        after it have not been heard yet, so nothing can be their echo (the whole answer is
        queued long before it is said, and its common words made a question asked over the
        bot look like echo)."""
        now = time.monotonic()
        self._forget_old_text(now)
        horizon = min(now, now if since is None else since) - self._recent_secs
        said = [t for at, t in self._recent_text if at >= horizon]
        playing = next((f.text for f in self._queue if isinstance(f, TTSTextFrame)), None)
        playing = playing or self._announced
        return " ".join(said + ([playing] if playing else []))

    def _forget_old_text(self, now: float) -> None:
        while self._recent_text and now - self._recent_text[0][0] > KEPT_TEXT_SECS:
            self._recent_text.popleft()
        kept = sum(len(text) for _, text in self._recent_text)
        while len(self._recent_text) > 1 and kept > KEPT_TEXT_CHARS:
            kept -= len(self._recent_text.popleft()[1])

    def hold(self) -> None:
        if not self._held:
            self._held = True
            self.holds += 1
            logger.debug(f"{self}: holding the bot's speech")

    def release(self) -> None:
        """Go on from where the hold stopped."""
        if self._held:
            self._held = False
            logger.debug(f"{self}: going on")
            self._changed.set()

    async def replay_sentence(self) -> None:
        """Stop the output for real and say the interrupted sentence again."""
        self._held = False
        self.replays += 1
        replay = [self._copy(f) for f in self._sentence_before + self._sentence]
        self._sentence, self._sentence_before = [], []
        logger.debug(f"{self}: saying the interrupted sentence again ({len(replay)} chunks)")
        await self.push_frame(InterruptionFrame())
        self._queue.extendleft(reversed(replay))
        self._play_until = 0.0
        self._changed.set()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.UPSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._task = self.create_task(self._release_loop(), "speech-gate")
        elif isinstance(frame, InterruptionFrame):
            self._clear()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            self._held = False
            self._queue.append(frame)
            self._changed.set()
        else:
            self._queue.append(frame)
            self._changed.set()

    def _clear(self) -> None:
        self._queue.clear()
        self._announced = None
        self._sentence, self._sentence_before = [], []
        self._held = False
        self._play_until = 0.0

    async def _stop(self) -> None:
        self._clear()
        if self._task:
            await self.cancel_task(self._task)
            self._task = None

    async def cleanup(self):
        await self._stop()
        await super().cleanup()

    async def _release_loop(self) -> None:
        while True:
            if self._held or not self._queue:
                self._changed.clear()
                await self._changed.wait()
                continue
            frame = self._queue[0]
            if isinstance(frame, OutputAudioRawFrame) and frame.audio:
                await self._release_audio(frame)
                continue
            self._queue.popleft()
            if isinstance(frame, (TTSTextFrame, TTSStartedFrame, TTSStoppedFrame)):
                # A chunk's text follows its audio: the next audio is a new chunk, of the
                # same sentence unless this one ended it or the reply is new or over.
                if isinstance(frame, TTSTextFrame) and not self._ends_sentence(frame.text):
                    self._sentence_before += self._sentence
                else:
                    self._sentence_before = []
                self._sentence = []
                if isinstance(frame, TTSTextFrame):
                    now = time.monotonic()
                    self._recent_text.append((now, frame.text))
                    self._forget_old_text(now)  # a session without barge-ins keeps no more
                    self._announced = None
            elif isinstance(frame, AggregatedTextFrame) and frame.will_be_spoken:
                self._announced = frame.text
            await self.push_frame(frame)
            if isinstance(frame, EndFrame):
                return

    async def _release_audio(self, frame: OutputAudioRawFrame) -> None:
        """Let out the next chunk of the frame at the head of the queue, in real time."""
        bytes_per_sec = frame.sample_rate * frame.num_channels * 2
        size = max(2 * frame.num_channels, int(CHUNK_SECS * bytes_per_sec) // 2 * 2)
        now = time.monotonic()
        wait = self._play_until - now - self.lead_secs
        if wait > 0:
            # Sleep, but wake for a hold or an interruption.
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                woke = time.monotonic()
                self._lateness.observe(woke - (now + wait), woke)
            return
        if len(frame.audio) <= size:
            self._queue.popleft()
            chunk = frame
        else:
            chunk = self._copy(frame, frame.audio[:size])
            frame.audio = frame.audio[size:]
            frame.num_frames = len(frame.audio) // (2 * frame.num_channels)
        self._play_until = max(self._play_until, now) + len(chunk.audio) / bytes_per_sec
        self._sentence.append(self._copy(chunk))
        await self.push_frame(chunk)

    def _ends_sentence(self, text: str) -> bool:
        if text.rstrip(" \"')")[-1:] in SENTENCE_END:
            return True
        said = sum(f.num_frames / f.sample_rate for f in self._sentence_before + self._sentence)
        return said > self._max_replay_secs

    @staticmethod
    def _copy(frame: OutputAudioRawFrame, audio: bytes | None = None) -> OutputAudioRawFrame:
        audio = frame.audio if audio is None else audio
        if isinstance(frame, TTSAudioRawFrame):
            copy = TTSAudioRawFrame(
                audio, frame.sample_rate, frame.num_channels, context_id=frame.context_id
            )
        else:
            copy = type(frame)(
                audio=audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
            )
        copy.transport_destination = frame.transport_destination
        return copy
