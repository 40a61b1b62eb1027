"""The one place that chooses a provider per stage and builds its Pipecat service.

No other module branches on local vs cloud. Local services share the weights in
`LocalModels`; cloud services take their base URL from `Settings`, so tests can point
them at loopback peers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipecat.services.llm_service import LLMService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.turns.user_turn_completion_mixin import UserTurnCompletionConfig
from pipecat.utils.text.base_text_aggregator import BaseTextAggregator

from bot.config import ProviderChoice, Settings, Stage
from bot.local.models import LocalModels
from bot.memory import MemoryKeeper
from bot.text_aggregation import FirstChunkTextAggregator
from bot.tools.tool_preamble import NoFillerAfterPreamble

if TYPE_CHECKING:
    from pipecat.processors.aggregators.llm_context import LLMContext

    from bot.local.whisper_prompt import ConversationPrompt


@dataclass(frozen=True)
class ProviderNames:
    """Which provider each stage uses, for logs, the dashboard and tests."""

    stt: str
    llm: str
    tts: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderNames:
        def name(stage: Stage, cloud: str, local: str) -> str:
            return cloud if uses_cloud(settings, stage) else local

        return cls(
            stt=name(Stage.STT, "deepgram", "whisper"),
            llm=name(Stage.LLM, "groq", "llama.cpp"),
            tts=name(Stage.TTS, "cartesia", "piper"),
        )


def uses_cloud(settings: Settings, stage: Stage) -> bool:
    """Whether `stage` runs on its cloud provider: `cloud`, or `auto` with its key set.

    `cloud` without a key is a configuration error, reported here rather than as a
    confusing 401 from the provider mid-conversation.
    """
    choice = settings.choice_for(stage)
    key = settings.key_for(stage)
    has_key = bool(key and key.get_secret_value())
    if choice is ProviderChoice.CLOUD and not has_key:
        raise ValueError(
            f"{stage.value.upper()}_PROVIDER=cloud needs its API key; see .env.example"
        )
    return choice is ProviderChoice.CLOUD or (choice is ProviderChoice.AUTO and has_key)


def runs_locally(settings: Settings, stage: Stage) -> bool:
    """Whether `stage` runs on this machine's models (not on a cloud provider)."""
    return not uses_cloud(settings, stage)


def stt_answers_every_segment(settings: Settings) -> bool:
    """Whether the chosen STT answers every speech segment, with words or without: the
    local eager Whisper does; Deepgram (whose tail may never be finalized) does not."""
    return settings.whisper_eager and runs_locally(settings, Stage.STT)


@dataclass
class Services:
    """One session's STT, LLM and TTS, as `Providers` builds them."""

    stt: STTService
    llm: LLMService
    tts: TTSService
    # How the LLM's text is cut for the TTS, where the TTS's own sentences are not best.
    tts_text: BaseTextAggregator | None = None
    # Called with the session's context once it exists: the local recogniser reads its last
    # exchange before each transcript (bot/local/whisper_prompt.py).
    follow_conversation: Callable[[LLMContext], None] | None = None
    # The LLM is the small local model (told the knowledge, offered no tool); None: as the
    # settings say.
    local_llm: bool | None = None


class Providers:
    """Builds one session's services: the provider the settings choose for each stage.

    Hosts (the web app, a session process, `run_bot`) take one; tests and benchmarks hand
    them a subclass that stands in for some stages (tests/support/fakes.py).
    """

    def services(self, settings: Settings, models: LocalModels) -> Services:
        stt = self.stt(settings, models)
        return Services(
            stt=stt,
            llm=self.llm(settings, models),
            tts=self.tts(settings, models),
            tts_text=self.tts_text(settings),
            local_llm=Stage.LLM in self.local_stages(settings),
            follow_conversation=getattr(stt, "follow_conversation", None),
        )

    def stt(self, settings: Settings, models: LocalModels) -> STTService:
        return create_stt(settings, models)

    def llm(self, settings: Settings, models: LocalModels) -> LLMService:
        return create_llm(settings, models)

    def tts(self, settings: Settings, models: LocalModels) -> TTSService:
        return create_tts(settings, models)

    def tts_text(self, settings: Settings) -> BaseTextAggregator | None:
        if not runs_locally(settings, Stage.TTS):
            return None
        # Piper speaks nothing before it has a whole chunk: a reply's first one is cut early.
        return FirstChunkTextAggregator(first_chunk=settings.tts_first_chunk)

    def local_stages(self, settings: Settings) -> list[Stage]:
        """The stages these services run on this machine's models (to load and share)."""
        return [s for s in (Stage.STT, Stage.LLM, Stage.TTS) if runs_locally(settings, s)]


PROVIDERS = Providers()


def create_stt(settings: Settings, models: LocalModels) -> STTService:
    if uses_cloud(settings, Stage.STT):
        from bot.cloud_services import DeepgramSTT

        stt = DeepgramSTT(
            api_key=settings.deepgram_api_key.get_secret_value(),
            base_url=settings.deepgram_base_url,
            settings=DeepgramSTT.Settings(
                model=settings.deepgram_model, interim_results=True, smart_format=True
            ),
            connect_timeout_secs=settings.cloud_connect_timeout_secs,
        )
        return with_fallback(Stage.STT, stt, settings, models)
    from bot.local.eager_whisper import EagerWhisperSTTService
    from bot.local.whisper_stt import SharedWhisperSTTService

    common = dict(
        model=models.whisper,
        beam_size=settings.whisper_beam_size,
        window_secs=settings.whisper_window_secs,
        vocabulary=stt_vocabulary(settings),
        conversation=stt_conversation_prompt(settings),
        # Whisper transcribes a whole segment at once and marks it final, so this only
        # bounds the turn detector's fallback wait for a transcript.
        ttfs_p99_latency=1.5,
    )
    if settings.whisper_eager:
        return EagerWhisperSTTService(
            untranscribable=_word_list(settings.stt_untranscribable_words),
            short_words=_word_list(settings.barge_in_interrupt_words),
            **common,
        )
    return SharedWhisperSTTService(**common)


def stt_vocabulary(settings: Settings) -> str:
    """Names the user may say, for the local recogniser's prompt (WHISPER_VOCABULARY)."""
    if not (settings.whisper_vocabulary and settings.search_enabled):
        return ""
    from bot.tools.knowledge import DEFAULT_KNOWLEDGE_DIR, KnowledgeBase

    folder = settings.knowledge_dir or DEFAULT_KNOWLEDGE_DIR
    return KnowledgeBase.shared(folder, max_results=settings.search_max_results).vocabulary()


def stt_conversation_prompt(settings: Settings) -> ConversationPrompt | None:
    """The local recogniser's prompt from the conversation (WHISPER_CONVERSATION_PROMPT)."""
    if not settings.whisper_conversation_prompt:
        return None
    from bot.local.whisper_prompt import ConversationPrompt

    return ConversationPrompt(stt_vocabulary(settings))


def create_memory_keeper(settings: Settings, models: LocalModels) -> MemoryKeeper | None:
    """Per-user memory (MEMORY_ENABLED), its rolling summary written by the configured LLM
    alone (no fallback, no tools)."""
    if not settings.memory_enabled:
        return None
    return MemoryKeeper(settings, summarizer=lambda: create_llm(settings, models, fallback=False))


def create_llm(settings: Settings, models: LocalModels, *, fallback: bool = True) -> LLMService:
    """The session's LLM; `fallback=False`: the chosen provider alone (out-of-band calls,
    such as per-user memory's summary)."""
    common = dict(
        system_instruction=settings.system_prompt,
        temperature=settings.llm_temperature,
        max_tokens=settings.llm_max_tokens,
    )
    if uses_cloud(settings, Stage.LLM):
        from bot.cloud_services import GroqLLM

        llm = GroqLLM(
            api_key=settings.groq_api_key.get_secret_value(),
            base_url=settings.groq_base_url,
            settings=GroqLLM.Settings(model=settings.groq_model, **common),
        )
        return with_fallback(Stage.LLM, llm, settings, models) if fallback else llm
    server = models.llm_server
    # OpenAI's `user` names the conversation: the server shifts its cache across dropped
    # turns only within one (bot/local/llm_cache.py).
    extra: dict = {"user": uuid.uuid4().hex}
    if settings.llm_seed >= 0:
        extra["seed"] = settings.llm_seed
    if settings.llm_turn_completion:
        # The server makes the reply's first token one of these (bot/local/turn_markers.py).
        extra["extra_body"] = {"turn_markers": list(UserTurnCompletionConfig().markers)}
    return LocalLLMService(
        api_key="local",  # the loopback server ignores it; the client requires one
        base_url=server.base_url,
        settings=LocalLLMService.Settings(model=server.model_name, extra=extra, **common),
    )


class LocalLLMService(NoFillerAfterPreamble, OpenAILLMService):
    """The local llama.cpp server's client; `use_server` points it at a server started
    after it was built (a fallback's, started lazily)."""

    def create_client(self, *args, **kwargs):
        self._openai = super().create_client(*args, **kwargs)
        return self._openai

    def use_server(self, base_url: str) -> None:
        self._openai.base_url = base_url  # the OpenAI client's own (public) setter


def create_tts(settings: Settings, models: LocalModels) -> TTSService:
    if uses_cloud(settings, Stage.TTS):
        from bot.cloud_services import CartesiaTTS

        tts = CartesiaTTS(
            api_key=settings.cartesia_api_key.get_secret_value(),
            url=f"{settings.cartesia_base_url.rstrip('/')}/tts/websocket",
            settings=CartesiaTTS.Settings(
                model=settings.cartesia_model, voice=settings.cartesia_voice
            ),
            connect_timeout_secs=settings.cloud_connect_timeout_secs,
        )
        return with_fallback(Stage.TTS, tts, settings, models)
    from bot.local.piper_tts import SharedPiperTTSService

    return SharedPiperTTSService(voice=models.piper, voice_name=settings.piper_voice)


def with_fallback(stage: Stage, cloud, settings: Settings, models: LocalModels | None):
    """`cloud` behind a switch to its local counterpart (processors/fallback/).

    With FALLBACK_ENABLED and local models to fall back on (`models` None: a caller with
    no local stack gets the bare cloud service). The local service is built here from the
    same settings with the stage forced local, over a lazy view of the models: building it
    loads nothing. Its model is fetched (once per process, on a thread of its own) when the
    session starts with FALLBACK_WARM, else at the first fault: a fallback that first has
    to start the 0.5 GB LLM server keeps the caller waiting for seconds.
    """
    if not settings.fallback_enabled or models is None:
        return cloud
    from processors import fallback

    # A fallback Whisper transcribes replayed utterances, whole and at once: eager passes
    # would only multiply its work at the worst moment (WHISPER_EAGER).
    forced_local = settings.model_copy(
        update={f"{stage.value}_provider": ProviderChoice.LOCAL, "whisper_eager": False}
    )
    factory = {Stage.STT: create_stt, Stage.LLM: create_llm, Stage.TTS: create_tts}[stage]
    local = factory(forced_local, fallback.LazyModels(models, settings.llm_model_name))

    def prepare_local() -> None:  # on a thread of its own
        # Load and warm the model unless this process already has (a cold llama.cpp server
        # takes ~10 s more for its first answer than a warm one).
        loaded = {Stage.STT: "_whisper", Stage.LLM: "_llm", Stage.TTS: "_piper"}[stage]
        if getattr(models, loaded, None) is None:
            models.warm_up(stt=stage is Stage.STT, llm=stage is Stage.LLM, tts=stage is Stage.TTS)
        if stage is Stage.LLM:
            # Built before the server was started: point its client at the server now.
            local.use_server(models.llm_server.base_url)

    policy = fallback.FallbackPolicy(
        budget_secs=getattr(settings, f"fallback_{stage.value}_budget_secs"),
        retry_secs=settings.fallback_retry_secs,
        retry_max_secs=settings.fallback_retry_max_secs,
        hold_secs=settings.fallback_hold_secs,
        hold_phrase=settings.fallback_hold_phrase,
        apology=settings.fallback_apology,
        local_timeout_secs=settings.fallback_local_timeout_secs,
        warm=settings.fallback_warm,
    )
    return fallback.create_fallback(stage.value, cloud, local, policy, prepare_local=prepare_local)


def create_search(settings: Settings, *, knowledge_dir=None):
    """The `web_search` backend: Tavily when its key is set, else the local knowledge base.

    The knowledge base is indexed once per process and shared (`KnowledgeBase.shared`);
    `knowledge_dir` overrides KNOWLEDGE_DIR (tests).
    """
    from bot.tools.knowledge import DEFAULT_KNOWLEDGE_DIR, KnowledgeBase
    from bot.tools.search import TavilySearch

    if uses_cloud(settings, Stage.SEARCH):
        return TavilySearch(
            api_key=settings.tavily_api_key.get_secret_value(),
            base_url=settings.tavily_base_url,
            max_results=settings.search_max_results,
        )
    folder = knowledge_dir or settings.knowledge_dir or DEFAULT_KNOWLEDGE_DIR
    return KnowledgeBase.shared(folder, max_results=settings.search_max_results)


def create_knowledge(settings: Settings, *, local_llm: bool | None = None, knowledge_dir=None):
    """How the LLM reaches the knowledge (local files, or Tavily with its key).

    Returns (tools, notes): a cloud LLM is offered `web_search` (Tavily, or the local
    knowledge base without a key) and searches when it decides to; a small local LLM is
    offered no tool (it calls one for greetings and arithmetic, and ignores what comes
    back) and instead gets notes with each turn that needs them: the knowledge base's
    passages, worked arithmetic (processors/turn_notes.py). `local_llm` None: as the
    settings say.
    """
    if local_llm is None:
        local_llm = runs_locally(settings, Stage.LLM)
    if not local_llm:
        if not settings.search_enabled:
            return [], None
        from bot.tools.search import WebSearchTool

        tool = WebSearchTool(
            create_search(settings, knowledge_dir=knowledge_dir),
            timeout_secs=settings.search_timeout_secs,
            max_result_chars=settings.search_max_result_chars,
            filler=settings.search_filler,
            apology=settings.search_apology,
        )
        return [tool.schema], None
    from processors.turn_notes import TurnNotes

    return [], TurnNotes(local_note_sources(settings, knowledge_dir=knowledge_dir))


def local_note_sources(settings: Settings, *, knowledge_dir=None) -> list:
    """What a local LLM is told with a turn: matching knowledge-base passages, and the
    results of the arithmetic it asks for (processors/turn_notes.py)."""
    from bot.tools.knowledge import DEFAULT_KNOWLEDGE_DIR, KnowledgeBase
    from processors.turn_notes import calculator_notes, knowledge_notes

    if not settings.search_enabled:  # no knowledge base at all
        return [calculator_notes]
    folder = knowledge_dir or settings.knowledge_dir or DEFAULT_KNOWLEDGE_DIR
    knowledge = KnowledgeBase.shared(folder, max_results=settings.search_max_results)
    return [
        knowledge_notes(
            knowledge, settings.knowledge_match_threshold, settings.search_max_result_chars
        ),
        calculator_notes,
    ]


def _word_list(setting: str) -> list[str]:
    """A comma-separated words setting, lower-cased."""
    return [w.strip().lower() for w in setting.split(",") if w.strip()]
