"""The cloud services, as Pipecat ships them plus what real providers need (issue 18).

Each is a subclass of Pipecat's own service, changed only through methods Pipecat's
services override themselves; docs/upstream.md lists the upstream hooks that would make
each change unnecessary. What every one of them adds:

- a bounded connect: setting a service up never holds the pipeline's start longer than
  `connect_timeout_secs` (a refused or unanswered handshake otherwise holds it for 8 s,
  or past the `PipelineWorker`'s setup timeout); it goes on connecting in the background and
  reports `ConnectTimeout`, which the fallback answers;
- `connected` and `reconnect()` for the fallback's retry (processors/fallback).

Per provider:

- Deepgram: a 429 at the handshake (the account's concurrency limit) is a busy moment,
  not a bad request: reported as a rate limit and retried with back-off (Pipecat treats
  every 4xx as permanent and gives the service up for the session). One retry loop runs
  until Deepgram lets it in or the session ends; each 429 in a row doubles the wait (or
  takes its `Retry-After`), up to `RETRY_MAX_SECS`.
- Groq: the OpenAI SDK's own retries are off (a 429 says `Retry-After: <seconds>` and the
  SDK would sleep through it, twice): a failed request fails the turn at once, and the
  fallback or the apology answers it within the stage budget. Text the model writes
  before a tool call is not followed by the tool's filler (`NoFillerAfterPreamble`).
- Cartesia: an `error` without `context_id` (API 2026-03-01 sends one "when available")
  is reported without touching the socket (Pipecat's `msg["context_id"]` raises KeyError,
  the socket reconnects and every context in flight is lost); a sentence arriving after
  the context expired (1 s after its last audio) goes out on a fresh Cartesia context;
  a broken stream is announced at once (`on_stream_broken`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from loguru import logger
from pipecat.frames.frames import TTSStoppedFrame
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.groq.llm import GroqLLMService
from pipecat.utils.errors import ErrorCategory, classify_http_status_code
from websockets.protocol import State

from bot.tools.tool_preamble import NoFillerAfterPreamble
from bot.turns.transcripts import UninterruptibleTranscriptsMixin
from processors.fallback import ConnectTimeout, ContextFreeError, Muteable

DEFAULT_CONNECT_TIMEOUT_SECS = 2.0


class _BoundedConnect:
    """Setup (which connects) returns within `connect_timeout_secs`, or at the first failed
    attempt (reported already; the service goes on trying in the background)."""

    connect_timeout_secs: float = DEFAULT_CONNECT_TIMEOUT_SECS

    async def setup(self, setup: FrameProcessorSetup):
        failed = asyncio.Event()  # the first attempt failed: that error says it all

        async def on_error(processor, error):
            failed.set()

        self.add_event_handler("on_error", on_error)
        connecting = asyncio.ensure_future(super().setup(setup))
        connecting.add_done_callback(_log_failure)
        failing = asyncio.ensure_future(failed.wait())
        try:
            await asyncio.wait(
                {connecting, failing},
                timeout=self.connect_timeout_secs,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            failing.cancel()
            self.remove_event_handler("on_error", on_error)
        if not connecting.done() and not failed.is_set():
            await self.push_error(
                f"not connected within {self.connect_timeout_secs:g}s",
                exception=ConnectTimeout(self.connect_timeout_secs),
                category=ErrorCategory.CONNECTIVITY,
            )


class DeepgramSTT(UninterruptibleTranscriptsMixin, Muteable, _BoundedConnect, DeepgramSTTService):
    """Deepgram live STT; a concurrency 429 is retried, not fatal (module doc)."""

    RETRY_FIRST_SECS = 1.0  # the wait after the first 429; doubled after each one in a row
    RETRY_MAX_SECS = 30.0  # no wait is longer, whatever Retry-After says

    def __init__(self, *, connect_timeout_secs: float = DEFAULT_CONNECT_TIMEOUT_SECS, **kwargs):
        super().__init__(**kwargs)
        self.connect_timeout_secs = connect_timeout_secs
        self._rate_limited = 0  # 429s in a row
        self._retry_in: float | None = None  # the wait the last 429 asked for, not yet begun
        self._retry_task: asyncio.Task | None = None  # the one retry loop
        self._connecting = asyncio.Lock()  # one (re)connect at a time

    @property
    def connected(self) -> bool:
        return self._connection is not None

    async def reconnect(self) -> bool:
        return await self._reconnect(only_if_down=False)

    async def _reconnect(self, *, only_if_down: bool) -> bool:
        async with self._connecting:
            if not (only_if_down and self.connected):
                await self._disconnect()
                await self._connect()
        if self.connected:
            self._rate_limited = 0
        return self.connected

    async def push_error(self, error_msg: str, exception: Exception | None = None, **kwargs):
        if getattr(exception, "status_code", None) == 429:
            # Deepgram's concurrency limit: the next attempt may well be let in.
            kwargs.update(force_treat_as_permanent=False, category=ErrorCategory.RATE_LIMIT)
            self._rate_limited += 1
            delay = self.retry_delay(exception)
            error_msg = f"Deepgram is at its concurrency limit (429); retrying in {delay:g}s"
            # A 429 met by the retry loop's own attempt (this runs inside it) only sets the
            # loop's next wait; a loop is started only when none runs.
            self._retry_in = delay
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = self.create_task(self._retry_while_refused(), "rate-limit-retry")
        await super().push_error(error_msg, exception=exception, **kwargs)

    def retry_delay(self, refusal: Exception | None) -> float:
        """The wait before the next attempt after this many 429s in a row: doubling from
        RETRY_FIRST_SECS, longer if the refusal's Retry-After says so, never past the cap."""
        backoff = self.RETRY_FIRST_SECS * 2.0 ** max(self._rate_limited - 1, 0)
        return min(max(backoff, _retry_after(refusal) or 0.0), self.RETRY_MAX_SECS)

    async def _retry_while_refused(self) -> None:
        """Wait what the last 429 asked, try again; until let in, refused otherwise (a 401,
        Pipecat giving up) or the session ends (stop, cancel and cleanup cancel this)."""
        while (delay := self._retry_in) is not None:
            self._retry_in = None
            await asyncio.sleep(delay)
            if self.connected:
                break  # another reconnect (the fallback's) got in meanwhile
            if self._retry_in is None:  # else refused again meanwhile: wait what that asked
                await self._reconnect(only_if_down=True)

    async def _stop_retrying(self) -> None:
        self._retry_in = None
        if self._retry_task is not None:
            await self.cancel_task(self._retry_task)
            self._retry_task = None

    async def stop(self, frame):
        await self._stop_retrying()
        await super().stop(frame)

    async def cancel(self, frame):
        await self._stop_retrying()
        await super().cancel(frame)

    async def cleanup(self):
        await self._stop_retrying()
        await super().cleanup()


def _retry_after(exception: Exception | None) -> float | None:
    """A refused handshake's `Retry-After` in seconds, if it sent one. The SDK's ApiError
    carries the request's headers; the response's are on the websockets error it wraps."""
    refusal = (exception.__cause__ or exception.__context__) if exception else None
    headers = getattr(refusal, "headers", None) or getattr(
        getattr(refusal, "response", None), "headers", None
    )
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:  # an HTTP date
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class GroqLLM(Muteable, NoFillerAfterPreamble, GroqLLMService):
    """Groq chat completions; no SDK retries, bounded reads (module doc)."""

    def __init__(self, *, read_timeout_secs: float = 30.0, **kwargs):
        self._read_timeout_secs = read_timeout_secs
        super().__init__(**kwargs)

    def create_client(self, api_key=None, base_url=None, **kwargs):
        client = super().create_client(api_key=api_key, base_url=base_url, **kwargs)
        timeout = httpx.Timeout(self._read_timeout_secs, connect=5.0)
        return client.with_options(max_retries=0, timeout=timeout)


CONTEXT_EXPIRY_SECS = 1.0  # Cartesia: a context expires this long after its last audio
EXPIRY_MARGIN_SECS = 0.2  # our clock starts when the audio arrives, not when it was sent


class CartesiaTTS(Muteable, _BoundedConnect, CartesiaTTSService):
    """Cartesia TTS over its WebSocket, fixed for API 2026-03-01's errors (module doc)."""

    announces_broken_streams = True  # raises on_stream_broken

    def __init__(self, *, connect_timeout_secs: float = DEFAULT_CONNECT_TIMEOUT_SECS, **kwargs):
        super().__init__(**kwargs)
        self.connect_timeout_secs = connect_timeout_secs
        self._wire: dict[str, str] = {}  # our context → the Cartesia context it continues on
        self._ours: dict[str, str] = {}  # the reverse
        self._last_audio: dict[str, float] = {}  # our context → when its last audio came
        self._register_event_handler("on_stream_broken", sync=True)

    @property
    def connected(self) -> bool:
        ws = self._websocket
        return ws is not None and ws.state is State.OPEN

    async def reconnect(self) -> bool:
        await self._disconnect()
        await self._connect()
        return self.connected

    # --- a broken stream, heard as the reconnect starts -----------------------------------

    async def _reconnect_websocket(self, attempt_number: int) -> bool:
        # Pipecat reconnects at once and says nothing; the text in flight is lost with
        # the socket (the "disconnected" event only comes 2 s later, after the close
        # handshake of the dead socket timed out).
        await self._call_event_handler("on_stream_broken")
        return await super()._reconnect_websocket(attempt_number)

    # --- contexts that expired ------------------------------------------------------------

    async def run_tts(self, text: str, context_id: str):
        async for frame in super().run_tts(text, self._wire_id(context_id, renew=True)):
            yield frame

    async def flush_audio(self, context_id: str | None = None):
        ours = context_id or self.get_active_audio_context_id()
        if ours and self._expired(ours):
            # Nothing more may be sent on it, and Cartesia says no more about it either:
            # close it here as its `done` would have.
            await self._close_locally(ours)
            return
        await super().flush_audio(self._wire_id(ours) if ours else None)

    async def on_audio_context_interrupted(self, context_id: str):
        wire = self._wire_id(context_id)
        if wire != context_id and self._websocket:
            await super()._get_websocket().send(json.dumps({"context_id": wire, "cancel": True}))
        self._forget(context_id)
        await super().on_audio_context_interrupted(context_id)

    def _expired(self, context_id: str) -> bool:
        last = self._last_audio.get(context_id)
        expiry = CONTEXT_EXPIRY_SECS - EXPIRY_MARGIN_SECS
        return last is not None and time.monotonic() - last >= expiry

    def _wire_id(self, context_id: str, *, renew: bool = False) -> str:
        if renew and self._expired(context_id):
            wire = str(uuid.uuid4())
            logger.debug(f"{self}: Cartesia context {context_id} expired; continuing on {wire}")
            self._forget(context_id)
            self._wire[context_id], self._ours[wire] = wire, context_id
        return self._wire.get(context_id, context_id)

    def _forget(self, context_id: str) -> None:
        self._ours.pop(self._wire.pop(context_id, ""), None)
        self._last_audio.pop(context_id, None)

    async def _close_locally(self, context_id: str) -> None:
        self._forget(context_id)
        if self.audio_context_available(context_id):
            await self.append_to_audio_context(context_id, TTSStoppedFrame(context_id=context_id))
            await self.remove_audio_context(context_id)

    # --- messages: errors without a context, our context ids --------------------------------

    def _get_websocket(self):
        return _Incoming(super()._get_websocket(), self._incoming)

    async def _incoming(self, message: str | bytes) -> str | None:
        """One message from Cartesia, as Pipecat's handler can take it (None: handled)."""
        try:
            msg: Any = json.loads(message)
        except ValueError:
            return message  # Pipecat reports it (and reconnects: the stream is broken)
        if not isinstance(msg, dict):
            return message
        if msg.get("type") == "error" and not msg.get("context_id"):
            await self._error_without_context(msg)
            return None
        wire = msg.get("context_id")
        ours = self._ours.get(wire, wire)
        if msg.get("type") in ("chunk", "timestamps") and ours:
            self._last_audio[ours] = time.monotonic()
        elif msg.get("type") in ("done", "error") and ours:
            self._forget(ours)
        if ours != wire:
            msg["context_id"] = ours
            return json.dumps(msg)
        return message

    async def _error_without_context(self, msg: dict) -> None:
        status = msg.get("status_code")
        category = classify_http_status_code(status) if isinstance(status, int) else None
        detail = msg.get("message") or msg.get("title") or msg.get("error") or msg
        await self.push_error(
            f"Cartesia error ({status} {msg.get('error_code', '')}): {detail}",
            exception=ContextFreeError(str(detail)),
            category=category or ErrorCategory.UNKNOWN,
        )


class _Incoming:
    """The Cartesia socket, its incoming messages passed through `translate` first."""

    def __init__(self, ws, translate):
        self._ws = ws
        self._translate = translate

    def __getattr__(self, name: str):
        return getattr(self._ws, name)

    async def __aiter__(self):
        async for message in self._ws:
            translated = await self._translate(message)
            if translated is not None:
                yield translated


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning(f"Connecting in the background failed: {task.exception()!r}")
