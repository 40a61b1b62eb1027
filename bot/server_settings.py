"""The server's settings: web server and sessions, abuse limits, the admin API and the cluster.

A part of `bot.config.Settings` (which reads them from the environment and `.env`, like
every other setting); import `Settings` from there.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class ServerSettings(BaseModel):
    # --- Web server and sessions ---------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=0, le=65535)
    max_sessions: int = Field(8, ge=1)
    # Largest WebSocket message accepted (bytes); larger ones close the socket (1009).
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    # A session with no speech from either side for this long is ended.
    idle_timeout_secs: float = Field(300.0, gt=0)
    # The user quiet this long after the bot spoke: the bot checks in once, and after
    # USER_IDLE_END_SECS more says goodbye and ends the session (bot/turns/idle.py). 0: never.
    user_idle_secs: float = Field(30.0, ge=0.0)
    user_idle_end_secs: float = Field(20.0, gt=0.0)
    user_idle_check_in: str = "Are you still there?"
    user_idle_goodbye: str = "I'll let you go now. Goodbye!"
    # Said when a browser session starts; empty for none.
    greeting: str = "Hi! I'm listening. Ask me anything."
    # The LLM writes the greeting (GREETING is then its instruction), as a reply of its
    # own: Pipecat's text-modality evals wait for one.
    greeting_from_llm: bool = False
    # Run each WebSocket/WebRTC session in its own session process (as Daily bots always
    # are): a crashing bot takes only its session down, and sessions use every core.
    # Each session process loads its own STT/TTS/VAD models (~2-4 s at connect, ~250 MB).
    session_processes: bool = False
    # With SESSION_PROCESSES: session processes kept loaded and waiting, so a session
    # starts at once.
    session_process_spares: int = Field(1, ge=0, le=8)
    # How long a session process (Daily rooms too) may take to load and say it is ready.
    spawn_ready_timeout_secs: float = Field(60.0, gt=0)
    # Longest wait for Daily's REST API (creating a room and its tokens).
    daily_api_timeout_secs: float = Field(15.0, gt=0)
    # How long a Daily bot waits to join its room before giving up.
    daily_join_timeout_secs: float = Field(20.0, gt=0)
    # A WebRTC peer that has not connected this long after its offer is closed and freed.
    webrtc_connect_timeout_secs: float = Field(5.0, gt=0)

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
