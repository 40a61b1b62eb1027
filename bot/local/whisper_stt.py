"""Pipecat's Whisper speech-to-text over the faster-whisper model loaded once per process
(bot/local/models.py): Pipecat's `WhisperSTTService` loads one per session in its
constructor; each session here keeps only its own prompt and audio buffer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    StartFrame,
    TranscriptionFrame,
)
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.whisper.stt import WhisperSTTSettings, language_to_whisper_language
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from bot.local.whisper_prompt import ConversationPrompt, transcribe_prompted
from bot.local.whisper_window import WindowedWhisper, heard
from bot.turns.transcripts import UninterruptibleTranscriptsMixin

NO_SPEECH_PROB = 0.4  # a segment Whisper finds likelier than this to be no speech is dropped

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from pipecat.processors.aggregators.llm_context import LLMContext


class SharedWhisperSTTService(UninterruptibleTranscriptsMixin, SegmentedSTTService):
    """Pipecat's Whisper service (`WhisperSTTService.run_stt`) over a model loaded once per
    process. WhisperSTTService loads its model in its constructor (`_load`) and reads it from
    a private attribute, so this is a SegmentedSTTService with Whisper's settings instead."""

    Settings = WhisperSTTSettings

    def __init__(
        self,
        *,
        model: WhisperModel,
        beam_size: int = 1,
        window_secs: float = 12.0,
        vocabulary: str = "",
        conversation: ConversationPrompt | None = None,
        **kwargs: Any,
    ):
        # `vocabulary`: names the user may say (the knowledge base's), as Whisper's prompt;
        # `conversation`: that and the session's last exchange instead (`follow`).
        super().__init__(
            settings=self.Settings(
                model="shared",
                language=Language.EN,
                no_speech_prob=NO_SPEECH_PROB,
                hotwords=None,
                initial_prompt=vocabulary or None,
            ),
            **kwargs,
        )
        self.whisper = WindowedWhisper(model, beam_size, window_secs)
        self._conversation = conversation
        self._running = False
        # After each segment, with its text ("" when Whisper heard no words): the STT
        # fallback waits for Whisper's word on a replayed tail (processors/fallback/stt.py).
        self._register_event_handler("on_segment_transcribed", sync=True)
        self._continuation: str | None = None

    def follow_conversation(self, context: LLMContext) -> None:
        """Read the last exchange of `context` before each transcription (when prompted by
        the conversation)."""
        if self._conversation:
            self._conversation.follow(context)

    def continue_from(self, text: str) -> None:
        """The next segment continues `text` (words another recogniser already heard of the
        same utterance): Whisper reads it as its previous text instead of the usual prompt.
        A tail decoded this way is heard better (bench/RESULTS.md, "Whisper on a tail")."""
        self._continuation = text.strip() or None

    @property
    def wants_wav_segments(self) -> bool:
        return False  # raw 16-bit PCM, which the model reads directly

    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        return language_to_whisper_language(language)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """As WhisperSTTService.run_stt, on the shared model."""
        await self.start_processing_metrics()
        prompt, self._continuation = self._continuation, None
        words = heard(await self._segments(audio, prompt=prompt), self._settings.no_speech_prob)
        await self.stop_processing_metrics()
        if words.text:
            logger.debug(f"Transcription: [{words.text}]")
            yield TranscriptionFrame(
                words.text,
                self._user_id,
                time_now_iso8601(),
                self._settings.language,
                result={"avg_logprob": words.avg_logprob},
            )
        await self._call_event_handler("on_segment_transcribed", words.text)

    async def _segments(
        self, pcm: bytes, *, prompt: str | None = None, **options: Any
    ) -> list[Any]:
        """Whisper's segments for 16-bit PCM (`WindowedWhisper.transcribe`'s options), read
        after `prompt`, or the conversation's or the vocabulary's."""
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        language = self._settings.language
        if prompt is not None:
            vocabulary = prompt
        elif self._conversation:
            vocabulary = self._conversation()
        else:
            vocabulary = self._settings.initial_prompt or ""

        def transcribe() -> list[Any]:
            # Segments decode as they are consumed: in the thread.
            return transcribe_prompted(
                self.whisper, audio, vocabulary, language=language, **options
            )

        return await asyncio.to_thread(transcribe)

    # A session cancelled while its pipeline is still starting (a client that leaves at
    # once) has its processors cleaned up, never cancelled, and SegmentedSTTService leaves
    # the transcription task its start() began running ("dangling tasks"): cancel it here.
    async def start(self, frame: StartFrame):
        self._running = True
        await super().start(frame)

    async def stop(self, frame: EndFrame):
        self._running = False
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame):
        self._running = False
        await super().cancel(frame)

    async def cleanup(self):
        if self._running:
            await self.cancel(CancelFrame(reason="cleaned up before it was stopped"))
        await super().cleanup()
