"""`ProviderErrorObserver`: every error and provider fallback of a session, counted in the
counters `provider_counters` makes (the server's, or a session process's:
web/process_metrics.py)."""

from __future__ import annotations

from pipecat.frames.frames import ErrorFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from prometheus_client import CollectorRegistry, Counter

from bot.providers import ProviderNames
from processors.fallback import ServiceFallbackFrame


def provider_counters(registry: CollectorRegistry | None) -> tuple[Counter, Counter]:
    """The errors and fallbacks counters, registered in `registry` (None: in none)."""
    errors = Counter(
        "voice_agent_errors",
        "Errors reported by the pipeline, by stage, provider and category.",
        ["stage", "provider", "category"],
        registry=registry,
    )
    fallbacks = Counter(
        "voice_agent_fallbacks",
        "Stages switched from their cloud provider to the local model, by stage and reason.",
        ["stage", "reason"],
        registry=registry,
    )
    return errors, fallbacks


class ProviderErrorObserver(BaseObserver):
    """Counts every `ErrorFrame` once, where it was raised, by stage and provider; and
    every provider fallback (`ServiceFallbackFrame`, processors/fallback/)."""

    def __init__(
        self,
        errors: Counter,
        providers: ProviderNames | None,
        fallbacks: Counter | None = None,
        **kwargs,
    ):
        super().__init__(observe_every_push=False, **kwargs)
        self._errors = errors
        self._providers = providers
        self._fallbacks = fallbacks

    def label(self, processor) -> tuple[str, str]:
        names = self._providers
        for kind, stage in ((STTService, "stt"), (LLMService, "llm"), (TTSService, "tts")):
            if isinstance(processor, kind):
                return stage, getattr(names, stage) if names else type(processor).__name__
        if isinstance(processor, (BaseInputTransport, BaseOutputTransport)):
            return "transport", type(processor).__name__
        return "pipeline", type(processor).__name__ if processor is not None else "unknown"

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if isinstance(frame, ServiceFallbackFrame) and self._fallbacks is not None:
            if frame.event == "fallback":
                self._fallbacks.labels(stage=frame.stage, reason=frame.reason).inc()
            return
        if not isinstance(frame, ErrorFrame):
            return
        stage, provider = self.label(frame.processor or data.source)
        category = frame.category.value if frame.category else "unknown"
        self._errors.labels(stage=stage, provider=provider, category=category).inc()
