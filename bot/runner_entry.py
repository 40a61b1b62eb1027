"""Our bot as Pipecat's development runner and hosting expect it: `bot(runner_args)`.

    .venv/bin/python -m bot.devrunner -t webrtc      # Pipecat's runner, our bot

The runner calls `bot()` once per session and offers no place to keep models between
calls, so the models live in one per-process cache here: the one piece of module-level
state, there because the runner's contract leaves no other.
"""

from __future__ import annotations

import functools

from pipecat.runner.types import (
    DailyRunnerArguments,
    RunnerArguments,
    SmallWebRTCRunnerArguments,
    WebSocketRunnerArguments,
)
from pipecat.evals.transport import EvalTransportParams
from pipecat.runner.utils import create_transport
from pipecat.transports.daily.transport import DailyParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

from bot.config import Settings
from bot.local.models import LocalModels
from bot.pipeline import run_bot
from bot.session import Session
from transports.webrtc import webrtc_params
from transports.websocket import GuardedProtobufSerializer


@functools.cache
def _process_models() -> tuple[Settings, LocalModels]:
    settings = Settings()
    return settings, LocalModels(settings)


def _transport_kind(runner_args: RunnerArguments) -> str:
    if getattr(runner_args, "transport_type", None) == "eval":
        return "eval"
    if isinstance(runner_args, DailyRunnerArguments):
        return "daily"
    if isinstance(runner_args, SmallWebRTCRunnerArguments):
        return "webrtc"
    if isinstance(runner_args, WebSocketRunnerArguments):
        return "websocket"
    return "unknown"


async def run_session(runner_args: RunnerArguments) -> None:
    settings, models = _process_models()
    transport = await create_transport(
        runner_args,
        {
            "daily": lambda: DailyParams(audio_in_enabled=True, audio_out_enabled=True),
            "webrtc": lambda: webrtc_params(settings),
            "websocket": lambda: FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                serializer=GuardedProtobufSerializer(settings.input_sample_rate),
            ),
            # Pipecat's eval harness (`pipecat eval run --bot-url ws://HOST:PORT/ws`): its
            # first message asks for this transport; its serializer is the harness's own.
            "eval": lambda: EvalTransportParams(audio_in_enabled=True, audio_out_enabled=True),
        },
    )
    session = Session(
        settings=settings,
        models=models,
        transport_kind=_transport_kind(runner_args),
        greeting=settings.greeting,
        handle_sigint=runner_args.handle_sigint,
    )
    await run_bot(transport, session)
