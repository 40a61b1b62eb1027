"""Whisper that transcribes while the user is still speaking.

Whisper only transcribes whole segments, so a plain segmented STT starts work when the
VAD says the user stopped (stop_secs after the last word) and the turn waits for it.
But while the user speaks the CPU is otherwise idle. This service:

- transcribes the utterance so far every `interim_interval_secs` and pushes the result
  as an interim transcript (the browser shows it live);
- starts a pass the moment the audio falls quiet after speech (a likely end of the
  utterance, well before the VAD's stop_secs have passed).

When the VAD stop comes, a pass that started after the user's last word already holds
the whole utterance: it becomes the final transcript as soon as it is done. Only when no
pass covers the end is the segment transcribed again, as a plain segmented STT would.

With SPECULATIVE_REPLY a trusted pass at a pause is also an eager end of turn (Pipecat's
`EagerEndOfTurnSTTServiceMixin`): the LLM starts answering it while the turn detector still
waits (bot/turns/speculation.py), and speech resuming withdraws it.

Passes are drafts (`WindowedWhisper.transcribe(draft=True)`): Whisper's short window only,
never its 30 s one, which cut-off audio ("What is the...") always sent them to and which
cost ~0.5-1 s of CPU beside the final transcript. A covering pass the short window was
unsure of is not taken as final: the segment goes to the 30 s window then.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.turns.eager_end_of_turn_mixin import EagerEndOfTurnSTTServiceMixin
from pipecat.utils.time import time_now_iso8601

from bot.local.whisper_stt import SharedWhisperSTTService
from bot.local.whisper_window import Heard, heard
from bot.turns.barge_in import NoWordsFrame
from bot.turns.speech_pause import PauseDetector

MIN_PASS_SECS = 0.5  # less audio than this is not worth a pass
MAX_PASSES = 2  # passes in flight at once, counting the end-of-speech pass
EAGER_PASS = "eager-pass"  # a final transcript's `result["source"]` when a pass produced it


# A draft this long that the 30 s window found no words in is kept: Whisper's short window
# heard "on what is chlorophyll" in "Hold on, what is chlorophyll?" where the 30 s window,
# padding half a second of speech with silence, called it no speech. Shorter drafts are as
# often a backchannel misheard ("I'm not." for "Uh-huh."), unless they are one of `short_words`.
KEPT_DRAFT_WORDS = 3


def draft_is_kept(draft: str, short_words: frozenset[str]) -> bool:
    words = re.findall(r"[a-z']+", draft.lower())
    return len(words) >= KEPT_DRAFT_WORDS or (bool(words) and " ".join(words) in short_words)


@dataclass
class _Pass:
    covered_bytes: int  # how much of the utterance buffer it transcribes
    task: asyncio.Task


class EagerWhisperSTTService(EagerEndOfTurnSTTServiceMixin, SharedWhisperSTTService):
    def __init__(
        self,
        *,
        interim_interval_secs: float = 1.0,
        untranscribable: list[str] = (),
        short_words: list[str] = (),
        **kwargs,
    ):
        """`short_words`: one- or two-word drafts kept when the 30 s window finds no words
        (the barge-in interrupt words: a "wait" lost is the bot talking on)."""
        super().__init__(**kwargs)
        self._untranscribable = tuple(untranscribable)
        self._short_words = frozenset(short_words)
        self._interim_interval = interim_interval_secs
        self._passes: list[_Pass] = []
        self._last_interim_pass = 0.0
        self._pause = PauseDetector()
        self._quiet_from = 0  # buffer offset where the current run of quiet frames began
        self._speech_until: int | None = None  # at the VAD stop: where the speech ended
        self._stop_secs = 0.2

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._drop_passes()
            await self._cancel_eager_end_of_turn()
            self._pause.reset()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._stop_secs = frame.stop_secs
            # Quiet since `_quiet_from` up to now: nothing after it needs transcribing.
            self._speech_until = self._quiet_from if self._pause.quiet else None
        await super().process_frame(frame, direction)

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        await super().process_audio_frame(frame, direction)
        if not self._user_speaking or not frame.audio:
            return
        was_quiet = self._pause.quiet
        paused = self._pause.update(frame.audio)
        if was_quiet and not self._pause.quiet:  # speaking again: that pause was not the end
            await self._cancel_eager_end_of_turn()
        if self._pause.quiet_frames == 1:
            self._quiet_from = len(self._audio_buffer) - len(frame.audio)
        now = time.monotonic()
        if paused:  # speech just paused: maybe the end
            self._start_pass(interim=False)
        elif not self._pause.quiet and now - self._last_interim_pass >= self._interim_interval:
            self._last_interim_pass = now
            self._start_pass(interim=True)

    def _start_pass(self, interim: bool) -> None:
        if len(self._audio_buffer) < MIN_PASS_SECS * self.sample_rate * 2:
            return
        running = sum(not p.task.done() for p in self._passes)
        # An interim pass is a nicety and waits for a free moment; an end-of-speech pass
        # may run beside one other.
        if running >= (1 if interim else MAX_PASSES):
            if not interim:
                logger.debug(f"{self}: no pass at this pause: {running} passes still running")
            return
        snapshot = bytes(self._audio_buffer)
        task = self.create_task(self._transcribe_pass(snapshot, interim), "eager-whisper-pass")
        self._passes = [p for p in self._passes if not p.task.done()] + [_Pass(len(snapshot), task)]

    async def _transcribe_pass(self, pcm: bytes, interim: bool) -> Heard:
        # Every pass is a draft: most are superseded, and the final path below re-checks
        # one the short window was unsure of.
        words = await self._transcribe(pcm + self._trailing_silence(), draft=True)
        text = words.text
        # Once the final transcript is out (the passes were consumed), an interim is stale.
        current = any(p.task is asyncio.current_task() for p in self._passes)
        if interim and text and current:
            await self.push_frame(
                InterimTranscriptionFrame(text, self._user_id, time_now_iso8601())
            )
        elif text and words.trusted and current and self._user_speaking and self._pause.quiet:
            # Still quiet since the pause this pass started at: the likely whole utterance.
            await self._push_eager_end_of_turn(
                text, user_id=self._user_id, language=self._settings.language
            )
        return words

    async def _transcribe(self, pcm: bytes, *, draft: bool = False, stock: bool = False) -> Heard:
        """See `WindowedWhisper.transcribe` for `draft` and `stock`."""
        segments = await self._segments(pcm, draft=draft, stock=stock)
        return heard(segments, self._settings.no_speech_prob)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """The final transcript: the latest eager pass's if it heard the whole utterance."""
        await self.start_processing_metrics()
        speech_bytes = len(audio) - len(self._trailing_silence())
        # Where the speech ended: where the audio went quiet for good, or else (the VAD
        # heard speech in what we called quiet) stop_secs before the end of the buffer.
        needed = self._speech_until
        if needed is None:
            needed = speech_bytes - int(self._stop_secs * self.sample_rate) * 2
        covering = [p for p in self._passes if p.covered_bytes >= needed]
        self._passes = []
        words, source = None, "whisper"
        if covering:
            try:
                draft = await covering[-1].task
                if draft.trusted:
                    words, source = draft, EAGER_PASS
                else:  # noisy or mangled audio: Whisper's own 30 s window decides
                    logger.debug(
                        f"{self}: unsure of the eager pass ({draft.text!r}); "
                        "the 30 s window instead"
                    )
                    words = await self._transcribe(audio, stock=True)
                    if not words.text and draft_is_kept(draft.text, self._short_words):
                        logger.debug(
                            f"{self}: the 30 s window found no words; keeping {draft.text!r}"
                        )
                        words = draft
            except Exception as e:  # a failed pass: transcribe the segment instead
                logger.warning(f"{self}: eager pass failed ({e}); transcribing the segment")
        if words is None:
            if not covering:
                logger.debug(f"{self}: no eager pass heard the end; transcribing the segment")
            words = await self._transcribe(audio)
        text = words.text
        await self.stop_processing_metrics()
        self._clear_eager_end_of_turn()  # committed: the turn strategy compares the two
        if text and any(word in text.lower() for word in self._untranscribable):
            logger.debug(f"{self}: {text!r} counts as no words (STT_UNTRANSCRIBABLE_WORDS)")
            text = ""
        if text:
            yield TranscriptionFrame(
                text,
                self._user_id,
                time_now_iso8601(),
                self._settings.language,
                result={"source": source, "avg_logprob": words.avg_logprob},
            )
        else:
            yield NoWordsFrame()

    async def stop(self, frame: EndFrame):
        await super().stop(frame)  # transcribes what is queued (it may take its pass)
        await self._drop_passes()  # a pass nobody will read must not outlive the session

    async def cancel(self, frame: CancelFrame):
        await self._drop_passes()
        await super().cancel(frame)

    async def _drop_passes(self) -> None:
        for p in self._passes:
            if not p.task.done():
                await self.cancel_task(p.task)
        self._passes = []
