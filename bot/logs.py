"""Loguru set-up: JSON lines or console lines, every session's lines tagged, secrets redacted.

* `LOG_FORMAT=json`: one JSON object per line (loguru `serialize=True`) on stdout.
  `LOG_FORMAT=console` (default): human-readable coloured lines on stderr.
  `LOG_FILE`, if set, always receives the JSON lines too.
* Every line logged while a session runs carries `extra.session_id` (and `extra.turn`,
  the session's current turn, once it has one): `run_bot` wraps the session in
  `session_context()`, a `logger.contextualize()`. Loguru keeps that in a context
  variable, which asyncio copies into every task created inside it — so the lines of
  Pipecat's own processors, transports and services (all tasks of the session's task
  tree) carry the id too, not only the lines the agent logs itself.
* One line per turn (`log_turn`): `extra.event == "turn"`, the turn's texts, every stage
  in ms (`stages_ms`, a stage that did not happen is absent) and the moments the stages
  are measured between (`moments_ms`, ms since the user started speaking).
* Secrets (every credential setting, see `Settings.secrets()`) are replaced by
  `[REDACTED]` in the message and in every extra field (patcher), and once more in the
  final text of every sink (tracebacks, serialized exceptions), so no line carries one.
* Standard-library logging (uvicorn's server errors and their tracebacks, asyncio's "task
  exception was never retrieved", libraries' warnings) and uncaught exceptions in any
  thread go through the same sinks, so they are JSON and redacted too.
* `ThrottledLog`: a line that a client can trigger at will is written once, then as one
  count per interval.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from bot.config import Settings

if TYPE_CHECKING:  # imported lazily: the CLI configures logging before it loads Pipecat
    from processors.observers.turn_record import TurnRecord

REDACTED = "[REDACTED]"
# Shorter "secrets" would redact ordinary words; real keys and tokens are far longer.
MIN_SECRET_LENGTH = 4

_open_files: list[TextIO] = []


class LiveValue:
    """A context value read when a line is logged, e.g. the session's current turn."""

    def __init__(self, read: Callable[[], Any]):
        self.read = read

    def __repr__(self) -> str:  # what a sink without our patcher would print
        return repr(self.read())


def _secret_forms(secrets: list[str]) -> list[str]:
    """Each secret as written, and as it appears inside a JSON string if that differs."""
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < MIN_SECRET_LENGTH:
            continue
        forms.add(secret)
        forms.add(json.dumps(secret)[1:-1])
    # Longest first, so a secret containing another is replaced whole.
    return sorted(forms, key=len, reverse=True)


def redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_redact_value(v, secrets) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    # Anything else is written with str() (serialize uses default=str): redact that.
    text = str(value)
    redacted = redact_text(text, secrets)
    return value if redacted == text else redacted


def _patcher(secrets: list[str]):
    def patch(record) -> None:
        extra = record["extra"]
        for key, value in list(extra.items()):
            if isinstance(value, LiveValue):
                current = value.read()
                if current is None:
                    del extra[key]
                else:
                    extra[key] = current
        if secrets:
            record["message"] = redact_text(record["message"], secrets)
            for key, value in extra.items():
                extra[key] = _redact_value(value, secrets)

    return patch


class _RedactingStream:
    """The last line of defence: the sink's final text, tracebacks included."""

    def __init__(self, stream: TextIO, secrets: list[str]):
        self._stream, self._secrets = stream, secrets

    def write(self, message: str) -> None:
        self._stream.write(redact_text(message, self._secrets))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return getattr(self._stream, "isatty", lambda: False)()


def _console_format(record) -> str:
    extra = record["extra"]
    tag = str(extra.get("session_id", "-"))
    if extra.get("turn") is not None:
        tag += f" t{extra['turn']}"
    # The tag is inserted into the format template: keep it free of markup and braces.
    tag = "".join(c for c in tag if c.isalnum() or c in " -_.")
    return (
        "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
        f"<cyan>{tag}</cyan> {{message}}\n{{exception}}"
    )


def configure_logging(
    settings: Settings, *, level: str | None = None, stream: TextIO | None = None
) -> None:
    """Replace every loguru sink with the configured ones (idempotent)."""
    logger.remove()
    while _open_files:
        _open_files.pop().close()
    secrets = _secret_forms(settings.secrets())
    logger.configure(patcher=_patcher(secrets), extra={})
    level = (level or settings.log_level).upper()
    common = dict(level=level, backtrace=False, diagnose=False, enqueue=False)
    if settings.log_format == "json":
        logger.add(
            _RedactingStream(stream or sys.stdout, secrets),
            format="{message}",
            serialize=True,
            colorize=False,
            **common,
        )
    else:
        out = stream or sys.stderr
        logger.add(
            _RedactingStream(out, secrets),
            format=_console_format,
            colorize=bool(getattr(out, "isatty", lambda: False)()),
            **common,
        )
    route_standard_logging(level)
    if settings.log_file:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        file = settings.log_file.open("a", encoding="utf-8", buffering=1)
        _open_files.append(file)
        logger.add(
            _RedactingStream(file, secrets),
            format="{message}",
            serialize=True,
            colorize=False,
            **common,
        )


class _ToLoguru(logging.Handler):
    """A standard-library logging handler that hands every record to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Find the caller outside the logging module, so loguru names the real source.
        frame, depth = logging.currentframe(), 2
        while frame and frame.f_code.co_filename == logging.__file__:
            frame, depth = frame.f_back, depth + 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


# Loggers that configure handlers of their own: theirs are removed, so they reach ours.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def route_standard_logging(level: str) -> None:
    """Send standard-library logging and uncaught exceptions to loguru's sinks (idempotent).

    Libraries' own records are taken from WARNING (their INFO chatter stays out, as it did
    before); the root logger keeps any other handler it has (pytest's, say)."""
    root = logging.getLogger()
    if not any(isinstance(h, _ToLoguru) for h in root.handlers):
        root.addHandler(_ToLoguru())
    numeric = logging.getLevelName(level.upper())
    root.setLevel(max(logging.WARNING, numeric if isinstance(numeric, int) else logging.WARNING))
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True

    def excepthook(kind, value, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        logger.opt(exception=(kind, value, tb)).critical("Uncaught exception")

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        logger.opt(exception=(args.exc_type, args.exc_value, args.exc_traceback)).error(
            f"Uncaught exception in thread {name}"
        )

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


class ThrottledLog:
    """A line a client can trigger at will: the first one at once, then at most one per
    `interval_secs` saying how many were held back."""

    def __init__(
        self,
        interval_secs: float,
        level: str = "WARNING",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.interval = interval_secs
        self.level = level
        self._clock = clock
        self._last_at: float | None = None
        self._held = 0
        self._last_message = ""

    def __call__(self, message: str) -> None:
        now = self._clock()
        if self._last_at is not None and now - self._last_at < self.interval:
            self._held += 1
            self._last_message = message
            return
        if self._held:
            message += f" (and {self._held} more in the last {now - self._last_at:.0f} s)"
        logger.opt(depth=1).log(self.level, message)
        self._last_at, self._held = now, 0

    def flush(self) -> None:
        """Write the count held back, if any (e.g. before the source goes away)."""
        if self._held:
            logger.opt(depth=1).log(
                self.level, f"{self._held} more held back; the last: {self._last_message}"
            )
            self._last_at, self._held = self._clock(), 0


def session_context(session_id: str, turn: Callable[[], int | None] | None = None):
    """Tag every line logged inside (and in every task started inside) with the session.

    `turn` is read at each line, so lines carry the turn in progress when they are logged.
    """
    extra: dict[str, Any] = {"session_id": session_id}
    if turn is not None:
        extra["turn"] = LiveValue(turn)
    return logger.contextualize(**extra)


def turn_moments_ms(record: TurnRecord) -> dict[str, float]:
    """The turn's moments in ms since the user started speaking (its first moment)."""
    moments = record.moments()
    if not moments:
        return {}
    origin = record.speech_start_at if record.speech_start_at is not None else min(moments.values())
    return {k.removesuffix("_at"): round((v - origin) * 1000.0, 1) for k, v in moments.items()}


def log_turn(record: TurnRecord) -> None:
    """The one log line of a turn, with all of its timings."""
    data = record.to_dict()
    stages = data["stages_ms"]
    timings = " ".join(f"{k}={v:.0f}ms" for k, v in stages.items())
    flag = " (interrupted)" if data["interrupted"] else ""
    logger.bind(
        event="turn",
        session_id=data["session_id"],
        turn=data["turn"],
        user_text=data["user_text"],
        bot_text=data["bot_text"],
        interrupted=data["interrupted"],
        stages_ms=stages,
        moments_ms=turn_moments_ms(record),
        **(
            {"audio_after_interruption_ms": data["audio_after_interruption_ms"]}
            if "audio_after_interruption_ms" in data
            else {}
        ),
    ).info(
        f"Turn {data['turn']}{flag}: {timings} | "
        f"user: {data['user_text']!r} | bot: {data['bot_text']!r}"
    )
