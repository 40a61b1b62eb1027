"""Soak: one long conversation, watching memory and context size.

    .venv/bin/python -m bench.soak                  # 60 simulated minutes (~10 min of wall time)
    .venv/bin/python -m bench.soak --minutes 10
    .venv/bin/python -m bench.soak --smoke          # half a simulated minute

One session of the real pipeline (`run_bot`: denoise, VAD, smart-turn, echo guard, context
aggregation and memory, metrics) with the instant fake STT/LLM/TTS, in this process, over
an in-memory transport that drives turns back to back: a spoken question (pushed as fast as
the pipeline takes it), then microphone silence until the bot has answered and been
quiet for a second, then the next question. Silence is paced `--speed` times faster than
real time; simulated time is the microphone audio delivered (20 ms per frame), which is
what every audio-timed part of the pipeline (VAD, smart-turn) lives by. The bot's audio
is discarded, so nothing the bench keeps grows.

Every simulated minute: this process's RSS, the LLM context (messages and an estimate of
its tokens: characters / 4), asyncio tasks. Bounded growth: RSS growth from the 5-minute
mark to the end must stay under 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from dataclasses import dataclass, field

import numpy as np
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from bench.common import (
    FRAME_SECS,
    add_common_args,
    loadavg,
    markdown_table,
    report,
    rss_mb,
    synthesize,
    wait_for_quiet_machine,
)
from transports.file import FedInputTransport

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Tell me something about the history of Rome.",
    "Which planet is closest to the sun?",
    "What should I cook for dinner tonight?",
    "How far away is the moon?",
]
FRAMES_PER_SEC = round(1 / FRAME_SECS)


@dataclass
class Sample:
    minute: float
    turns: int
    rss_mb: float
    messages: int
    tokens: int
    tasks: int


@dataclass
class Soak:
    questions: list[np.ndarray]
    minutes: float
    speed: float
    sample_every_secs: float
    pause_secs: float = 1.0
    frames: int = 0
    bot_starts: int = 0
    bot_speaking: bool = False
    turns: int = 0
    unanswered: int = 0
    samples: list[Sample] = field(default_factory=list)
    context: object = None

    @property
    def simulated_secs(self) -> float:
        return self.frames * FRAME_SECS

    def sample(self) -> None:
        gc.collect()
        messages = self.context.get_messages() if self.context is not None else []
        chars = sum(len(str(m.get("content", ""))) if isinstance(m, dict) else len(str(m))
                    for m in messages)
        self.samples.append(
            Sample(self.simulated_secs / 60, self.turns, rss_mb(), len(messages), chars // 4,
                   len(asyncio.all_tasks()))
        )
        s = self.samples[-1]
        print(
            f"  minute {s.minute:5.1f}: {s.turns:4d} turns, RSS {s.rss_mb:6.1f} MB, "
            f"context {s.messages:4d} messages ≈ {s.tokens:5d} tokens, {s.tasks} tasks",
            flush=True,
        )


class SoakInput(FedInputTransport):
    def __init__(self, transport: SoakTransport, params: TransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self._t = transport
        self._soak = transport.soak
        self._silence = b""

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)
        self._silence = b"\x00\x00" * int(self.sample_rate * FRAME_SECS)
        self.start_feeding("soak-feed")
        await self._t._call_event_handler("on_client_connected", self)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            self._soak.bot_starts += 1
            self._soak.bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._soak.bot_speaking = False

    async def _mic(self, pcm: bytes, realtime_share: float) -> None:
        await self.push_audio_frame(InputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate,
                                                       num_channels=1))
        soak = self._soak
        soak.frames += 1
        if soak.frames % round(soak.sample_every_secs * FRAMES_PER_SEC) == 0:
            soak.sample()
        await asyncio.sleep(realtime_share)

    async def _feed(self) -> None:
        soak = self._soak
        silence_sleep = FRAME_SECS / soak.speed
        n = int(self.sample_rate * FRAME_SECS)
        for _ in range(FRAMES_PER_SEC // 2):
            await self._mic(self._silence, silence_sleep)
        index = 0
        while soak.simulated_secs < soak.minutes * 60:
            audio = soak.questions[index % len(soak.questions)]
            index += 1
            starts_before = soak.bot_starts
            for offset in range(0, len(audio) - n + 1, n):
                await self._mic(audio[offset : offset + n].tobytes(), 0)
            # Silence until the bot has answered and been quiet for `pause_secs` (simulated).
            quiet_frames, waited = 0, 0
            while quiet_frames < soak.pause_secs * FRAMES_PER_SEC:
                answered = soak.bot_starts > starts_before and not soak.bot_speaking
                quiet_frames = quiet_frames + 1 if answered else 0
                waited += 1
                if waited > 30 * FRAMES_PER_SEC:  # 30 simulated seconds without an answer
                    soak.unanswered += 1
                    break
                await self._mic(self._silence, silence_sleep)
            soak.turns += 1
        await self.push_frame(EndWorkerFrame(reason="soak finished"))


class SoakOutput(BaseOutputTransport):
    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        return True  # discarded: the bench keeps nothing that grows


class SoakTransport(BaseTransport):
    def __init__(self, soak: Soak, **kwargs):
        super().__init__(**kwargs)
        self.soak = soak
        self.params = TransportParams(audio_in_enabled=True, audio_out_enabled=True)
        self._input = self._output = None
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self):
        if not self._input:
            self._input = SoakInput(self, self.params, name=self._input_name)
        return self._input

    def output(self):
        if not self._output:
            self._output = SoakOutput(self.params, name=self._output_name)
        return self._output


async def run(args) -> tuple[str, dict]:
    from bot.config import Settings
    from bot.local.models import LocalModels
    from bot.logs import configure_logging
    from bot.pipeline import run_bot
    from bot.session import Session

    print("synthesizing the questions with the local voice…", flush=True)
    questions = [q.audio for q in synthesize(QUESTIONS)]
    from tests.support.fakes import FakeProviders

    # Instant stand-in model services; every other setting as configured (environment, .env).
    settings = Settings(greeting="")
    configure_logging(settings, level=args.log_level)
    models = LocalModels(settings)
    soak = Soak(questions, args.minutes, args.speed, args.sample_secs)
    session = Session(
        settings=settings, models=models, transport_kind="soak", providers=FakeProviders()
    )

    async def watch_context():
        while session.context is None:
            await asyncio.sleep(0.01)
        soak.context = session.context

    started_load = loadavg()
    started = time.monotonic()
    watcher = asyncio.create_task(watch_context())
    await run_bot(SoakTransport(soak), session)
    watcher.cancel()
    wall = time.monotonic() - started
    if not soak.samples:
        soak.sample()
    models.close()

    samples = soak.samples
    mark = next((s for s in samples if s.minute >= min(5.0, args.minutes / 2)), samples[0])
    end = samples[-1]
    after = [s for s in samples if s.minute >= mark.minute]
    growth = 100 * (end.rss_mb - mark.rss_mb) / mark.rss_mb
    peak_growth = 100 * (max(s.rss_mb for s in after) - mark.rss_mb) / mark.rss_mb
    at = f"at {mark.minute:.1f} min"
    rows = [
        ["simulated minutes / wall seconds", f"{end.minute:.1f} / {wall:.0f}"],
        ["turns (unanswered)", f"{end.turns} ({soak.unanswered})"],
        [f"RSS {at} → end (MB)", f"{mark.rss_mb:.1f} → {end.rss_mb:.1f}"],
        [f"RSS growth after {mark.minute:.1f} min: at the end / at its peak",
         f"{growth:+.2f} % / {peak_growth:+.2f} %"],
        [f"context messages {at} → end", f"{mark.messages} → {end.messages}"],
        [f"context tokens (estimated) {at} → end", f"{mark.tokens} → {end.tokens}"],
        [f"asyncio tasks {at} → end", f"{mark.tasks} → {end.tasks}"],
    ]
    figures = {"growth": growth, "mark": mark.minute, "load": started_load, "samples": samples}
    return markdown_table(["metric", "value"], rows), figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="Simulated minutes of conversation.")
    parser.add_argument("--speed", type=float, default=10.0,
                        help="Silence runs this many times real time.")
    parser.add_argument("--sample-secs", type=float, default=60.0,
                        help="Simulated seconds between samples.")
    parser.add_argument("--log-level", default="WARNING",
                        help="The session's log level (default WARNING).")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.sample_secs = 0.5, 6.0
    wait_for_quiet_machine(args.wait_load, timeout_secs=3 * 3600)
    table, figures = asyncio.run(run(args))
    minutes_table = markdown_table(
        ["simulated minute", "turns", "RSS MB", "context messages", "context tokens (est.)",
         "asyncio tasks"],
        [[f"{s.minute:.1f}", s.turns, f"{s.rss_mb:.1f}", s.messages, s.tokens, s.tasks]
         for s in figures["samples"]],
    )
    lines = [
        f"- target RSS growth < 5 % after the first {figures['mark']:.0f} minutes: "
        f"{figures['growth']:+.2f} % — "
        f"{'reached' if figures['growth'] < 5 else 'NOT reached'}",
    ]
    report(args, "soak", "Soak (one session, fake providers)", table=table,
           started_load=figures["load"], verdicts=lines,
           appendix=f"<details><summary>Every sample</summary>\n\n{minutes_table}\n\n</details>",
           heading=f"soak (fake STT/LLM/TTS, in process); load average at start {figures['load']}")


if __name__ == "__main__":
    main()
