"""Loguru set-up: one sink, secrets redacted from every line."""

from __future__ import annotations

import sys

from loguru import logger

from bot.config import Settings


def _redactor(secrets: list[str]):
    def patch(record):
        for secret in secrets:
            if secret in record["message"]:
                record["message"] = record["message"].replace(secret, "[REDACTED]")
    return patch


def configure_logging(settings: Settings, *, level: str | None = None) -> None:
    logger.remove()
    logger.configure(patcher=_redactor(settings.secrets()), extra={"session_id": "-"})
    logger.add(
        sys.stderr,
        level=(level or settings.log_level).upper(),
        format="<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
        "<cyan>{extra[session_id]}</cyan> {message}",
    )
