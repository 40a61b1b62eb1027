"""The one place that chooses a provider per stage and builds its Pipecat service.

No other module branches on local vs cloud. Local services share the weights in
`LocalModels`; cloud services take their base URL from `Settings`, so tests can point
them at loopback peers.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from bot.config import Settings, Stage
from bot.local_models import LocalModels


@dataclass(frozen=True)
class ProviderNames:
    """Which provider each stage uses, for logs, the dashboard and tests."""

    stt: str
    llm: str
    tts: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderNames:
        def name(stage: Stage, cloud: str, local: str) -> str:
            if settings.uses_fake(stage):
                return "fake"
            return cloud if settings.uses_cloud(stage) else local

        return cls(
            stt=name(Stage.STT, "deepgram", "whisper"),
            llm=name(Stage.LLM, "groq", "llama.cpp"),
            tts=name(Stage.TTS, "cartesia", "piper"),
        )


def create_stt(settings: Settings, models: LocalModels) -> STTService:
    if settings.uses_fake(Stage.STT):
        from bot.fake_services import InstantSTTService

        return InstantSTTService()
    if settings.uses_cloud(Stage.STT):
        from pipecat.services.deepgram.stt import DeepgramSTTService

        return DeepgramSTTService(
            api_key=settings.deepgram_api_key.get_secret_value(),
            base_url=settings.deepgram_base_url,
            settings=DeepgramSTTService.Settings(
                model=settings.deepgram_model, interim_results=True, smart_format=True
            ),
        )
    from bot.eager_whisper import EagerWhisperSTTService
    from bot.local_services import SharedWhisperSTTService

    whisper = EagerWhisperSTTService if settings.whisper_eager else SharedWhisperSTTService
    return whisper(
        model=models.whisper,
        beam_size=settings.whisper_beam_size,
        # Whisper transcribes a whole segment at once and marks it final, so this only
        # bounds the turn detector's fallback wait for a transcript.
        ttfs_p99_latency=1.5,
    )


def create_llm(settings: Settings, models: LocalModels) -> LLMService:
    common = dict(
        system_instruction=settings.system_prompt,
        temperature=settings.llm_temperature,
        max_tokens=settings.llm_max_tokens,
    )
    if settings.uses_fake(Stage.LLM):
        from bot.fake_services import InstantLLMService

        return InstantLLMService()
    if settings.uses_cloud(Stage.LLM):
        from pipecat.services.groq.llm import GroqLLMService

        return GroqLLMService(
            api_key=settings.groq_api_key.get_secret_value(),
            base_url=settings.groq_base_url,
            settings=GroqLLMService.Settings(model=settings.groq_model, **common),
        )
    from pipecat.services.openai.llm import OpenAILLMService

    server = models.llm_server
    return OpenAILLMService(
        api_key="local",  # the loopback server ignores it; the client requires one
        base_url=server.base_url,
        settings=OpenAILLMService.Settings(model=server.model_name, **common),
    )


def create_tts(settings: Settings, models: LocalModels) -> TTSService:
    if settings.uses_fake(Stage.TTS):
        from bot.fake_services import InstantTTSService

        return InstantTTSService()
    if settings.uses_cloud(Stage.TTS):
        from pipecat.services.cartesia.tts import CartesiaTTSService

        return CartesiaTTSService(
            api_key=settings.cartesia_api_key.get_secret_value(),
            url=f"{settings.cartesia_base_url.rstrip('/')}/tts/websocket",
            settings=CartesiaTTSService.Settings(
                model=settings.cartesia_model, voice=settings.cartesia_voice
            ),
        )
    from bot.local_services import SharedPiperTTSService

    return SharedPiperTTSService(voice=models.piper, voice_name=settings.piper_voice)


def create_search(settings: Settings, *, knowledge_dir=None):
    """The `web_search` backend: Tavily when its key is set, else the local knowledge base.

    The knowledge base is indexed once per process and shared (`KnowledgeBase.shared`);
    `knowledge_dir` overrides KNOWLEDGE_DIR (tests).
    """
    from bot.search import DEFAULT_KNOWLEDGE_DIR, KnowledgeBase, TavilySearch

    if settings.uses_cloud(Stage.SEARCH):
        return TavilySearch(
            api_key=settings.tavily_api_key.get_secret_value(),
            base_url=settings.tavily_base_url,
            max_results=settings.search_max_results,
        )
    folder = knowledge_dir or settings.knowledge_dir or DEFAULT_KNOWLEDGE_DIR
    return KnowledgeBase.shared(folder, max_results=settings.search_max_results)
