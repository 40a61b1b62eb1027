"""The provider fallback's settings (processors/fallback/): budgets, retries, what is said.

A part of `bot.config.Settings` (which reads them from the environment and `.env`, like
every other setting); import `Settings` from there.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class FallbackSettings(BaseModel):
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
    fallback_apology: str = (
        "Sorry, I'm having trouble answering right now. Please try again in a moment."
    )
