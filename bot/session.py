"""`Session`: one conversation, as its host (CLI, web app, tests) hands it to `run_bot`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.config import Settings
from bot.local.models import LocalModels
from bot.providers import PROVIDERS, Providers
from bot.session_control import SessionControl
from processors.observers.session_state import SessionStateObserver, StateSubscriber
from processors.observers.turn_metrics import TurnMetricsObserver, TurnSubscriber


@dataclass
class Session:
    """Everything one conversation needs from its host (CLI, web app, tests)."""

    settings: Settings
    models: LocalModels
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    transport_kind: str = "unknown"
    greeting: str = ""
    on_turn: list[TurnSubscriber] = field(default_factory=list)
    on_state: list[StateSubscriber] = field(default_factory=list)
    # Called with the session once each bot reply (whole or cut off) is in its context.
    on_reply: list[Callable[[Session], Awaitable[None]]] = field(default_factory=list)
    observers: list[BaseObserver] = field(default_factory=list)
    handle_sigint: bool = False
    # Builds the session's STT, LLM and TTS (bot/providers.py); tests and benchmarks hand
    # in stand-ins for some stages.
    providers: Providers = PROVIDERS
    # A resumed conversation's messages, to start from (web/resume.py).
    history: list[dict] = field(default_factory=list)
    # Told to the client with its session id: it resumes the conversation with both.
    resume_token: str | None = None
    # The user the conversation is remembered for (bot/memory/), if the client named one.
    user_id: str | None = None
    # Run with the data of the client's RTVI client-ready message, before the greeting.
    on_client_ready: list[Callable[[Session, dict], Awaitable[None]]] = field(default_factory=list)
    # Run when the client's connection is up (a WebRTC client that offered again by itself
    # after losing its connection does no new client-ready).
    on_connected: list[Callable[[Session], Awaitable[None]]] = field(default_factory=list)
    # Run once the session is over (its client gone, or ended by the server), its context
    # still there; must not block (the session's teardown waits for it).
    on_end: list[Callable[[Session], Awaitable[None]]] = field(default_factory=list)
    # Filled in by run_bot, for hosts that steer a live session.
    worker: PipelineWorker | None = None
    context: LLMContext | None = None
    metrics: TurnMetricsObserver | None = None
    state: SessionStateObserver | None = None
    # Live steering (instructions, speech, ending) for the admin API.
    control: SessionControl | None = None
