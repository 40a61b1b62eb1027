"""The admin API's request and response bodies (web/admin.py), as they appear on the
OpenAPI page (/docs), with the limits and checks on the text a client sends."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_INSTRUCTIONS_CHARS = 4000
MAX_SAY_CHARS = 1000
# Text fields must hold some non-blank character (also in the schema, for clients): a
# character outside JSON Schema's (ECMAScript's) \s, so the schema and the check agree.
NOT_BLANK = r"\S"
_BLANK = set("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | {
    chr(c) for c in range(0x2000, 0x200B)
}


def has_text(value: str) -> bool:
    return any(c not in _BLANK for c in value)


# --------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------


class SessionSummary(BaseModel):
    id: str
    transport: str = Field(description="websocket, webrtc, …")
    state: str = Field(description="listening, thinking or speaking")
    started_at: float = Field(description="Unix time")
    duration_secs: float
    turns: int = Field(description="Completed turns")
    pid: int = Field(
        description="The process running the session: the server, or its own session process"
    )
    node: str | None = Field(None, description="The node running it (cluster mode: REDIS_URL)")


class ContextInfo(BaseModel):
    messages: int = Field(description="Messages in the conversation context now")
    estimated_tokens: int | None = Field(
        None, description="The next LLM request's estimated size: instructions, tools, messages"
    )
    budget_tokens: int | None = Field(None, description="CONTEXT_TOKEN_BUDGET")
    dropped_messages: int | None = Field(None, description="Old messages dropped to fit so far")


class SessionDetail(SessionSummary):
    instructions: str | None = Field(description="The system instructions the next turn uses")
    instruction_updates: int = Field(description="Changes made through this API")
    context: ContextInfo


class ContextUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"instructions": "End every answer with the word banana.", "mode": "append"}
            ]
        },
    )

    instructions: str = Field(
        min_length=1,
        max_length=MAX_INSTRUCTIONS_CHARS,
        description="Text of the new instructions (or of the addition, with mode=append)",
        json_schema_extra={"pattern": NOT_BLANK},
    )
    mode: Literal["replace", "append"] = Field(
        "replace", description="replace the session's instructions, or append to them"
    )

    @field_validator("instructions")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not has_text(value):
            raise ValueError("instructions must contain some text")
        return value


class ContextUpdateResult(BaseModel):
    id: str
    mode: Literal["replace", "append"]
    instructions: str = Field(description="The session's instructions after the change")
    applied: bool = Field(
        description="True: the LLM has the new instructions and the next answer uses them. "
        "False: still queued behind an answer in progress; they apply before the next one."
    )


class SayRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "One moment please."}]}
    )

    text: str = Field(
        min_length=1,
        max_length=MAX_SAY_CHARS,
        description="What the bot says",
        json_schema_extra={"pattern": NOT_BLANK},
    )

    @field_validator("text")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not has_text(value):
            raise ValueError("text must contain some words")
        return value.strip()


class SayResult(BaseModel):
    id: str
    queued: bool = Field(description="The text is on its way to the voice")


class EndResult(BaseModel):
    id: str
    ended: bool
    graceful: bool = Field(description="False: the session did not stop in time and was cancelled")
