"""STT: Deepgram → Whisper. The utterance in flight is replayed into Whisper.

A rolling buffer holds the current utterance's audio from the VAD start (with a second
of pre-roll), or, once the cloud has finalized part of it (Deepgram sends several finals
in one utterance), the audio since its last final. The budget runs from the VAD stop to
a final that covers the end of the speech: a tail that never gets one (an unconfirmed
`Finalize`) is transcribed by Whisper from the buffer.

The local STT (`SharedWhisperSTTService`) reads the cloud's finals as the tail's previous
text (`continue_from`) and says when it is done with a segment (`on_segment_transcribed`).
The cloud's finals for an utterance are held until one covers the end of the speech, or
Whisper has had its say on the tail (its `on_segment_transcribed`; the hold phrase covers
a slow Whisper, the local timeout bounds it): the user's turn ends on the whole question,
not on its first half answered and its tail taken for a turn of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque

from loguru import logger
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

from processors.fallback.switcher import FallbackSwitcher

UTTERANCE = "utterance"


class STTFallback(FallbackSwitcher):
    stage = "stt"
    PREROLL_SECS = 1.0
    OVERLAP_SECS = 0.3  # kept before the cloud's last final: it lags the audio a little

    def __init__(self, cloud, local, policy, **kwargs):
        super().__init__(cloud, local, policy, **kwargs)
        self._preroll: deque[InputAudioRawFrame] = deque()
        self._preroll_bytes = 0
        self._segment: list[InputAudioRawFrame] | None = None
        self._speaking = False
        self._awaiting = False  # VAD stopped, the end of the speech not finalized yet
        self._heard = False  # the cloud finalized the end of this segment
        self._finalized = False  # the cloud sent a final in this segment...
        self._unfinalized = False  # ...and interim text since its last final
        self._local_pending = False  # the local STT owes a transcript
        self._utterances = 0
        self._hold_at_stop = False  # redone mid-utterance: the hold waits for the VAD stop
        self._held: list[TranscriptionFrame] = []  # the cloud's finals, until the end is heard
        local.add_event_handler("on_segment_transcribed", self._on_local_transcribed)

    def _tracks(self, frame):
        return isinstance(
            frame,
            (
                InputAudioRawFrame,
                VADUserStartedSpeakingFrame,
                VADUserStoppedSpeakingFrame,
                UserStoppedSpeakingFrame,
            ),
        )

    def _first_byte(self, frame):
        final = isinstance(frame, TranscriptionFrame) and not isinstance(
            frame, InterimTranscriptionFrame
        )
        return UTTERANCE if final and frame.text.strip() else None

    def _timeout_detail(self, key):
        budget = self._policy.budget_secs
        return f"no final transcript {budget:g}s after the user stopped speaking"

    async def _on_input(self, frame, direction):
        if isinstance(frame, InputAudioRawFrame):
            self._preroll.append(frame)
            self._preroll_bytes += len(frame.audio)
            limit = int(self.PREROLL_SECS * frame.sample_rate * frame.num_channels * 2)
            while self._preroll_bytes - len(self._preroll[0].audio) >= limit:
                self._preroll_bytes -= len(self._preroll.popleft().audio)
            if self._speaking and self._segment is not None:
                self._segment.append(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            if self._awaiting and not self._heard and self._segment is not None:
                # Spoke again before the last segment was transcribed: one segment.
                seen = {id(f) for f in self._segment}
                self._segment.extend(f for f in self._preroll if id(f) not in seen)
            else:
                self._segment = list(self._preroll)
                self._finalized = self._unfinalized = False
            self._speaking, self._awaiting, self._heard = True, False, False
            await self.watchdog.stop(UTTERANCE)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            # The user's turn is over: whatever the local STT had to say has been said
            # (Whisper rightly says nothing for a cough).
            self._local_pending = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            if self.on_local:
                await self._local_utterance_ended()
                return
            # The end of the speech is finalized when the cloud's last word on this
            # segment was a final: no interim text came after it. (Clock-free: under
            # load, or in fast mode, the VAD's stop lags the audio the cloud has heard.)
            self._heard = self._heard or (self._finalized and not self._unfinalized)
            if self._heard:
                await self._release()
            else:
                self._awaiting = True
                self.watchdog.expect(UTTERANCE)

    async def _local_utterance_ended(self):
        self._local_pending, self._local_answered = True, False
        self._utterances += 1
        self.create_task(self._local_due(self._utterances), f"{self}::local_due")
        if self._hold_at_stop:
            self._hold_at_stop = False
            self._starts_at_fault = self._bot_starts
            if self._policy.hold_secs > 0:
                await self._arm("hold", self._policy.hold_secs, self._hold)

    async def _on_output(self, service, frame, direction):
        if self._first_byte(frame) is None:
            if service is self._cloud and isinstance(frame, InterimTranscriptionFrame):
                self._unfinalized = self._unfinalized or bool(frame.text.strip())
            return True
        if service is not self._cloud:
            self._local_pending = False
            self._local_output()
            # What the cloud heard comes first; the tail's audio began a little before it
            # (OVERLAP_SECS), so its first words may be the cloud's last.
            return await self._push_with_held(frame, overlapping=True)
        self._finalized, self._unfinalized = True, False
        if self._speaking:
            # Part of the utterance is transcribed: only what follows may need a redo.
            self._segment = self._since_last_final()
            self._held.append(frame)
            return False
        self._heard, self._awaiting, self._segment = True, False, None
        return await self._push_with_held(frame)

    async def _push_with_held(self, frame: TranscriptionFrame, overlapping: bool = False) -> bool:
        """The utterance's held finals and its last transcript as one: once the user has
        stopped, a turn may end on the first final it gets, and the rest would start a
        turn of its own."""
        if not self._held:
            return True
        held, self._held = self._held, []
        text = " ".join(p.text.strip() for p in held if p.text.strip())
        last = frame.text.strip()
        if overlapping:
            last = without_overlap(text, last)
        text = f"{text} {last}".strip()
        await self.push_frame(
            TranscriptionFrame(
                text, frame.user_id, frame.timestamp, frame.language, finalized=frame.finalized
            )
        )
        return False

    async def _release(self) -> None:
        """Let the held finals go on, in order."""
        held, self._held = self._held, []
        for frame in held:
            await self.push_frame(frame)

    def _since_last_final(self) -> list[InputAudioRawFrame]:
        kept, secs = [], 0.0
        for f in reversed(self._segment or []):
            if secs >= self.OVERLAP_SECS:
                break
            kept.append(f)
            secs += len(f.audio) / (2 * f.sample_rate * f.num_channels)
        return kept[::-1]

    def _hold_wanted(self, replay):
        return replay[1]  # not while the user is still speaking

    def _take_replay(self):
        if self._segment is None or not (self._speaking or (self._awaiting and not self._heard)):
            return None
        replay = (self._segment, not self._speaking)
        if not self._speaking:
            self._segment = None
        self._awaiting = False
        return replay

    async def _replay(self, replay):
        frames, stopped = replay
        if self._held:
            # Whisper hears the tail better reading the cloud's words of it first.
            self._local.continue_from(" ".join(f.text.strip() for f in self._held))
        if not stopped:
            await self._release()
        await self._inject(self._local, VADUserStartedSpeakingFrame())
        for f in frames:
            copy = InputAudioRawFrame(
                audio=f.audio, sample_rate=f.sample_rate, num_channels=f.num_channels
            )
            await self._inject(self._local, copy)
        if stopped:
            self._local_pending = True
            self._utterances += 1
            self.create_task(self._local_due(self._utterances), f"{self}::local_due")
            await self._inject(self._local, VADUserStoppedSpeakingFrame())
        else:
            # The user is still speaking: the rest of the audio and the real VAD stop
            # reach the local STT as the active service (the hold waits for that stop).
            self._hold_at_stop = True

    async def _on_local_transcribed(self, service, text: str) -> None:
        """Whisper is done with a segment: words go on with the held finals (`_on_output`);
        none heard in the tail, and the cloud's finals are the whole utterance."""
        if not text and self._held:
            self._local_output()
            await self._release()

    async def _local_failed(self, why: str) -> None:
        if self._held and not self._ending:
            # Whisper never finished the tail: what the cloud heard is better than an apology.
            logger.warning(f"STT: {self._local} gave no tail ({why}); the cloud's finals go on")
            self._local_answered = True
            await self._release()
            return
        await super()._local_failed(why)

    async def _stop_cloud_work(self):
        pass  # a streaming STT has no request to cancel; it is reconnected on retry

    async def _local_due(self, utterance: int):
        """Whisper may rightly say nothing (noise): stop waiting after the local timeout."""
        await asyncio.sleep(self._policy.local_timeout_secs)
        if utterance == self._utterances:
            self._local_pending = False

    async def _on_retry_due(self):
        # Switch between utterances, so the cloud hears every one from its start.
        while self._retry_due and self.on_local and not self._ending:
            if not self._speaking and not self._local_pending:
                async with self._lock:
                    if not self._speaking and not self._local_pending:
                        await self._switch_back()
                        return
            await asyncio.sleep(0.05)


def _word(token: str) -> str:
    return re.sub(r"[^a-z0-9']", "", token.lower())


def without_overlap(before: str, after: str, most: int = 3) -> str:
    """`after` without its first words where they repeat the last words of `before` ("What
    is the capital" + "capital of France?" → "of France?")."""
    head, tail = before.split(), after.split()
    for n in range(min(most, len(head), len(tail)), 0, -1):
        if [_word(w) for w in head[-n:]] == [_word(w) for w in tail[:n]]:
            return " ".join(tail[n:])
    return after
