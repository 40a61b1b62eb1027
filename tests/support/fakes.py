"""Instant stand-ins for STT, LLM and TTS, for tests and capacity, soak and memory benches.

They are real Pipecat services driven by real frames, so everything around them
(transport, denoise, VAD, turn detection, context aggregation, metrics) runs for real;
only the model work is replaced by a fixed answer given at once. No setting selects them:
a test hands `FakeProviders` to `create_app` or a `Session`, and a server or session
process of its own is started with this module in place of `python -m bot`:

    python -m tests.support.fakes serve --fake stt,llm,tts [--answer TEXT] [--port N]
    python -m tests.support.fakes session-process --fake ...  (the spawner's session process)
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601

from bot.config import Settings, Stage
from bot.local.models import LocalModels
from bot.providers import Providers

FAKE_TRANSCRIPT = "hello there"
FAKE_ANSWER = "Hi. This is a fixed answer."
# Seconds of audio the fake voice speaks per character of text.
FAKE_SECS_PER_CHAR = 0.02


class InstantSTTService(SegmentedSTTService):
    """Answers every speech segment (cut by the VAD) with a fixed transcript."""

    def __init__(self, *, transcript: str = FAKE_TRANSCRIPT, **kwargs):
        super().__init__(
            ttfs_p99_latency=0.3, settings=STTSettings(model=None, language=None), **kwargs
        )
        self._transcript = transcript

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        yield TranscriptionFrame(self._transcript, self._user_id, time_now_iso8601())


def unset_llm_settings() -> LLMSettings:
    """LLM settings with nothing set: for a stand-in LLM that has no model to configure."""
    fields = dataclasses.fields(LLMSettings)
    return LLMSettings(**{f.name: None for f in fields if f.init and f.name != "extra"})


class InstantLLMService(LLMService):
    """Answers every context with a fixed reply, streamed as one text frame."""

    def __init__(self, *, answer: str = FAKE_ANSWER, **kwargs):
        super().__init__(settings=unset_llm_settings(), **kwargs)
        self._answer = answer

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.start_ttfb_metrics()
            await self.push_frame(LLMFullResponseStartFrame())
            await self.stop_ttfb_metrics()
            await self.push_frame(LLMTextFrame(self._answer))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class InstantTTSService(TTSService):
    """Speaks any text at once as a quiet tone (length proportional to the text)."""

    def __init__(self, *, secs_per_char: float = FAKE_SECS_PER_CHAR, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kwargs,
        )
        self._secs_per_char = secs_per_char

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        await self.start_ttfb_metrics()
        n = max(1, int(len(text) * self._secs_per_char * self.sample_rate))
        tone = np.sin(np.arange(n) * 2 * np.pi * 440 / self.sample_rate) * 3000
        # Faded in and out as a voice starts and ends: a tone that starts with a click makes
        # the echo canceller find an "echo" in a question that starts with one too.
        fade = np.linspace(0.0, 1.0, min(n // 2, self.sample_rate // 100))
        if len(fade):
            tone[: len(fade)] *= fade
            tone[n - len(fade) :] *= fade[::-1]
        tone = tone.astype(np.int16)
        await self.stop_ttfb_metrics()
        yield TTSAudioRawFrame(tone.tobytes(), self.sample_rate, 1, context_id=context_id)


class FakeProviders(Providers):
    """Production's providers, with the instant stand-ins for the stages in `fake`
    (comma-separated: "stt,llm,tts"); the fake LLM says `answer`."""

    def __init__(self, fake: str = "stt,llm,tts", *, answer: str = FAKE_ANSWER):
        self.fake = {Stage(stage.strip()) for stage in fake.split(",") if stage.strip()}
        self.answer = answer

    def stt(self, settings: Settings, models: LocalModels) -> SegmentedSTTService:
        return InstantSTTService() if Stage.STT in self.fake else super().stt(settings, models)

    def llm(self, settings: Settings, models: LocalModels) -> LLMService:
        if Stage.LLM in self.fake:
            return InstantLLMService(answer=self.answer)
        return super().llm(settings, models)

    def tts(self, settings: Settings, models: LocalModels) -> TTSService:
        return InstantTTSService() if Stage.TTS in self.fake else super().tts(settings, models)

    def tts_text(self, settings: Settings):
        return None if Stage.TTS in self.fake else super().tts_text(settings)

    def local_stages(self, settings: Settings) -> list[Stage]:
        return [s for s in super().local_stages(settings) if s not in self.fake]

    def arguments(self) -> list[str]:
        """This module's command-line options that make the same providers."""
        return ["--fake", ",".join(sorted(self.fake)), "--answer", self.answer]

    def session_process_command(self) -> list[str]:
        """What the spawner runs for a session process with these providers."""
        return [sys.executable, "-m", "tests.support.fakes", "session-process", *self.arguments()]


def main() -> None:
    import typer

    from bot import cli

    app = typer.Typer(add_completion=False, no_args_is_help=True)
    fake_option = typer.Option("stt,llm,tts", help="The stages to stand in for.")
    answer_option = typer.Option(FAKE_ANSWER, help="What the fake LLM answers.")

    @app.command()
    def serve(
        fake: str = fake_option,
        answer: str = answer_option,
        host: str = typer.Option(None),
        port: int = typer.Option(None),
    ):
        """`python -m bot serve` with the stand-ins (settings from the environment)."""
        from bot.logs import configure_logging

        providers = FakeProviders(fake, answer=answer)
        overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        settings = Settings(**overrides)
        configure_logging(settings)
        cli.run_server(settings, providers, providers.session_process_command())

    @app.command("session-process")
    def session_process(fake: str = fake_option, answer: str = answer_option):
        """`python -m bot session-process` with the stand-ins."""
        cli.run_session_process(FakeProviders(fake, answer=answer))

    app()


if __name__ == "__main__":
    main()
