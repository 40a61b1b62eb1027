"""TTS: Cartesia → Piper. The text sent to the cloud whose audio did not complete (the
current answer, pending `TTSSpeakFrame`s) is spoken again by Piper. A dropped stream
with text in flight counts as a failure (Cartesia reconnects silently and loses the rest
of the sentence)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection

from processors.fallback.switcher import FallbackSwitcher


@dataclass
class _Utterance:
    """Text routed to the cloud TTS whose audio has not completed."""

    texts: list[str] = field(default_factory=list)
    response: bool = True  # an LLM answer (Start … End), else a TTSSpeakFrame
    open: bool = True  # LLMFullResponseEndFrame not seen yet
    speak: TTSSpeakFrame | None = None
    contexts: set[str] = field(default_factory=set)
    heard: bool = False


class TTSFallback(FallbackSwitcher):
    stage = "tts"
    hold = False  # the hold phrase would wait behind the replay in the same TTS
    IDLE_SECS = 0.3

    def __init__(self, cloud, local, policy, **kwargs):
        super().__init__(cloud, local, policy, **kwargs)
        self._pending: list[_Utterance] = []
        self._heard_contexts: deque[str] = deque(maxlen=64)
        self._last_local_audio = 0.0
        self._replayed_answer = False  # an answer's start was replayed; its end may be lost
        cloud.add_event_handler("on_tts_request", self._on_cloud_request)
        # Hear of a broken stream as the reconnect starts where the service says so
        # (bot.cloud_services.CartesiaTTS), else when "disconnected" comes (2 s later).
        announces = getattr(cloud, "announces_broken_streams", False)
        cloud.add_event_handler(
            "on_stream_broken" if announces else "on_disconnected", self._on_cloud_broken
        )

    def _tracks(self, frame):
        kinds = (
            LLMFullResponseStartFrame,
            LLMFullResponseEndFrame,
            TextFrame,
            TTSSpeakFrame,
            InterruptionFrame,
        )
        return isinstance(frame, kinds)

    def _first_byte(self, frame):
        return frame.context_id if isinstance(frame, TTSAudioRawFrame) else None

    def _timeout_detail(self, key):
        return f"no audio within {self._policy.budget_secs:g}s of the text"

    def _local_idle(self) -> bool:
        local = self._local
        contexts = local.get_audio_contexts() if hasattr(local, "get_audio_contexts") else []
        quiet = time.monotonic() - self._last_local_audio > self.IDLE_SECS
        return not self._bot_speaking and not contexts and quiet

    async def _on_input(self, frame, direction):
        if isinstance(frame, InterruptionFrame):
            self._pending.clear()
            self._local_answered = True
            await self.watchdog.stop()
            await self._disarm("local")
            return
        if direction is not FrameDirection.DOWNSTREAM or getattr(frame, "skip_tts", False):
            return
        starts = isinstance(frame, (LLMFullResponseStartFrame, TTSSpeakFrame))
        if starts and self._retry_due and self._local_idle():
            await self._switch_back()
        if self.on_local:
            if starts:
                self._local_answered = False
            return
        if isinstance(frame, LLMFullResponseStartFrame):
            self._pending.append(_Utterance())
        elif isinstance(frame, LLMFullResponseEndFrame):
            for u in self._pending:
                if u.response and u.open:
                    u.open = False
                    break
        elif isinstance(frame, TTSSpeakFrame):
            speak = _Utterance(texts=[frame.text], response=False, open=False, speak=frame)
            self._pending.append(speak)
        elif isinstance(frame, TextFrame) and not isinstance(
            frame, (TranscriptionFrame, InterimTranscriptionFrame)
        ):
            current = next((u for u in reversed(self._pending) if u.response and u.open), None)
            if current is None:
                current = _Utterance()
                self._pending.append(current)
            current.texts.append(frame.text)

    async def _on_cloud_request(self, tts, context_id: str, text: str):
        # An event handler task: it may run after the request's first audio came out.
        if self.on_local or self._failing:
            return
        utterance = next(
            (
                u
                for u in self._pending
                if u.speak is not None and not u.contexts and u.speak.text.strip() == text.strip()
            ),
            None,
        ) or next((u for u in self._pending if u.response), None)
        if utterance is not None:
            utterance.contexts.add(context_id)
            utterance.heard = utterance.heard or context_id in self._heard_contexts
        if context_id not in self._heard_contexts:
            self.watchdog.expect(context_id)

    async def _on_cloud_broken(self, tts, *args) -> None:
        if self._ending or self.on_local or self._failing:
            return
        # Text sent whose audio did not complete: the rest of it is lost with the socket.
        if any("".join(u.texts).strip() for u in self._pending) or self.watchdog.waiting:
            self._fail("disconnect", "the connection broke with text in flight")

    async def _on_output(self, service, frame, direction):
        if service is self._local:
            if isinstance(frame, TTSAudioRawFrame):
                self._last_local_audio = time.monotonic()
                self._local_output()
            return
        if isinstance(frame, TTSAudioRawFrame):
            cid = frame.context_id
            if cid not in self._heard_contexts:
                self._heard_contexts.append(cid)
            for u in self._pending:
                if cid in u.contexts:
                    u.heard = True
        elif isinstance(frame, TTSStoppedFrame):
            self._pending = [
                u
                for u in self._pending
                if u.response or not (u.heard and frame.context_id in u.contexts)
            ]
        elif isinstance(frame, LLMFullResponseEndFrame):
            # Queued behind the answer's audio: the answer is complete.
            for i, u in enumerate(self._pending):
                if u.response and not u.open:
                    del self._pending[i]
                    break

    def _take_replay(self):
        pending, self._pending = self._pending, []
        return pending or None

    async def _replay(self, pending):
        self._replayed_answer = any(u.response for u in pending)
        for u in pending:
            if u.response:
                await self._local.queue_frame(LLMFullResponseStartFrame())
                if "".join(u.texts).strip():
                    await self._local.queue_frame(LLMTextFrame("".join(u.texts)))
                if not u.open:
                    await self._local.queue_frame(LLMFullResponseEndFrame())
            else:
                speak = u.speak
                await self._local.queue_frame(
                    TTSSpeakFrame(speak.text, append_to_context=speak.append_to_context)
                )

    async def _reset_cloud(self):
        # Drop what the cloud TTS kept of its failed answer (text waiting in its
        # sentence aggregator, open audio contexts) before it speaks again.
        await self._inject(self._cloud, InterruptionFrame())

    async def _apologize(self):
        # The local TTS cannot speak it: reconnect the cloud one and try it for the apology.
        await self._inject(self._local, InterruptionFrame())
        if self.on_local and await self._revive():
            self._retry_due = True
            async with self._lock:
                await self._switch_back()
        service = self.strategy.active_service
        await service.queue_frame(TTSSpeakFrame(self._policy.apology, append_to_context=False))
        if self._replayed_answer:
            # The replayed answer's end went with the local TTS's interruption: close the
            # answer after the apology, or the assistant's turn stays open until the user
            # speaks again (and the client waits on an answer that never ends).
            self._replayed_answer = False
            await service.queue_frame(LLMFullResponseEndFrame())
