"""Settings for tests, isolated from the developer's environment and .env."""

from __future__ import annotations

from bot.config import Settings

KEY_VARIABLES = (
    "DEEPGRAM_API_KEY", "GROQ_API_KEY", "CARTESIA_API_KEY", "TAVILY_API_KEY", "DAILY_API_KEY"
)


def local_settings(**overrides) -> Settings:
    """Settings for the offline stack, whatever the environment or .env say."""
    local = {"stt_provider": "local", "llm_provider": "local", "tts_provider": "local",
             "search_provider": "local"}
    return Settings(_env_file=None, **{**local, **overrides})
