"""Cartesia TTS over a loopback WebSocket (`/tts/websocket`).

Follows (as read 2026-12-04) https://docs.cartesia.ai/api-reference/tts/websocket,
https://docs.cartesia.ai/use-the-api/tts-websocket/contexts ("Contexts automatically
expire 1 second after the last audio output is streamed out"; no input after that),
https://docs.cartesia.ai/use-the-api/compare-tts-endpoints,
https://docs.cartesia.ai/api-reference/models/list (`GET /models`) and the error format
of API version 2026-03-01 (as pinned by `pipecat.services.cartesia.tts`):
`{type: "error", done, status_code, error_code, title, message, request_id,
context_id?}`, `context_id` only when the error concerns one:

- `GET /tts/websocket` upgraded to a WebSocket. Credentials either as headers
  (`X-API-Key`, `Cartesia-Version`, which Pipecat sends) or as the query parameters
  `api_key` and `cartesia_version` (browser clients); a bad key is refused with HTTP 401
  and a missing version with HTTP 400.
- Generation requests: `{model_id, transcript, voice: {mode: "id", id}, context_id,
  output_format: {container: "raw", encoding: "pcm_s16le" | "pcm_f32le", sample_rate},
  add_timestamps, continue, language, max_buffer_delay_ms, ...}`. Inputs on one
  `context_id` are concatenated; `continue: false` (an empty transcript flushes) ends the
  context. The peer answers with `chunk` messages (base64 raw audio at the requested
  rate: a NON-SILENT tone whose length grows with the text, `secs_per_char`),
  `timestamps` messages (`word_timestamps: {words, start, end}`, seconds from the
  context's start) when `add_timestamps` is set, and one `done` per finished context.
  An invalid request gets an `error` (400 `invalid_request`); an input on a context that
  expired (`expiry_secs` after its last audio) a 400 `context_expired`; the next
  `refuse_contexts` new contexts a 429 `concurrency_limited` (the account's concurrency
  used up, e.g. by other sessions), all with `context_id`.
  `error_without_context()` sends an error with no `context_id` on every connection.
- Cancellation: `{"context_id": ..., "cancel": true}` stops that context's output at
  once: no further `chunk`, `timestamps` or `done` for it.

Records `contexts` (texts received, continue flags, chunks sent, whether cancelled or
done) and `cancels`. `hold_after_chunks` makes every context pause after that many
chunks until it is cancelled or `release_holds()` is called, so a test can interrupt
"mid-stream" deterministically.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from aiohttp import WSMsgType, web

from tests.peers._server import FaultyStream, PeerServer

SUPPORTED_ENCODINGS = {"pcm_s16le": np.int16, "pcm_f32le": np.float32}


@dataclass
class CartesiaContext:
    context_id: str
    model_id: str
    voice: dict
    output_format: dict
    add_timestamps: bool
    texts: list[str] = field(default_factory=list)
    continues: list[bool] = field(default_factory=list)
    chunks_sent: int = 0
    audio_bytes_sent: int = 0
    cancelled: bool = False
    done: bool = False
    finished_input: bool = False
    audio_secs: float = 0.0  # audio generated so far: where the next word starts
    last_audio_at: float | None = None  # when its last chunk went out
    generating: bool = False
    expiry_secs: float = 1.0
    rejected: list[str] = field(default_factory=list)  # inputs refused (expired)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue, repr=False)
    task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def expired(self) -> bool:
        idle = self.last_audio_at is not None and not self.generating
        return idle and time.monotonic() - self.last_audio_at >= self.expiry_secs



class CartesiaPeer(PeerServer):
    name = "cartesia"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        secs_per_char: float = 0.05,
        chunk_secs: float = 0.1,
        chunk_delay: float = 0.0,
        frequency: float = 330.0,
        hold_after_chunks: int | None = None,
        expiry_secs: float = 1.0,
        refuse_contexts: int = 0,
        models: tuple[str, ...] = ("sonic-3", "sonic-3.5", "sonic-2", "sonic-turbo"),
    ):
        super().__init__(api_key=api_key)
        self.expiry_secs = expiry_secs
        self.refuse_contexts = refuse_contexts
        self.models = models
        self._outs: list[FaultyStream] = []
        self.secs_per_char = secs_per_char
        self.chunk_secs = chunk_secs
        self.chunk_delay = chunk_delay
        self.frequency = frequency
        self.hold_after_chunks = hold_after_chunks
        self._holds_released: asyncio.Event | None = None
        self.contexts: dict[str, CartesiaContext] = {}
        self.cancels: list[str] = []
        self.connections: list[dict] = []  # handshake query and headers
        self.errors_sent: list[dict] = []
        self.refused: list[str] = []  # contexts refused with concurrency_limited

    def release_holds(self) -> None:
        self.holds_released.set()

    @property
    def holds_released(self) -> asyncio.Event:
        if self._holds_released is None:
            self._holds_released = asyncio.Event()
        return self._holds_released

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get("/tts/websocket", self._websocket)
        app.router.add_get("/models", self._models)

    def error_body(self, status: int, message: str) -> dict:
        return {"error": message, "status_code": status}

    async def _models(self, request: web.Request):
        await self.record(request)
        key = request.headers.get("X-API-Key") or self.bearer(request)
        if not self.key_ok(key):
            return self.error_response(401, "Invalid API key")
        if not request.headers.get("Cartesia-Version"):
            return self.error_response(400, "Cartesia-Version header required")
        data = [{"id": m, "capability": "tts"} for m in self.models]
        return web.json_response({"data": data})

    async def error_without_context(self, status: int = 400, code: str = "invalid_request"):
        """An error tied to no context, on every open connection (API 2026-03-01)."""
        for out in list(self._outs):
            await self._error(out, None, "Something went wrong with this request.", status, code)

    # --- the connection -------------------------------------------------------------------

    async def _websocket(self, request: web.Request):
        query, headers = dict(request.query), dict(request.headers)
        self.connections.append({"query": query, "headers": headers})
        await self.changed()
        key = headers.get("X-API-Key") or query.get("api_key")
        version = headers.get("Cartesia-Version") or query.get("cartesia_version")
        if not self.key_ok(key):
            return self.error_response(401, "Invalid API key")
        if not version:
            return self.error_response(400, "Cartesia-Version header or query param required")
        spec, response = await self.ws_handshake_fault(request)
        if response is not None:
            return response

        ws = await self.accept_ws(request)
        out = FaultyStream(
            self, ws, request, spec, wrong_shape={"type": "chunk", "context_id": None}
        )
        mine: list[CartesiaContext] = []
        self._outs.append(out)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await self._on_message(out, msg.data, mine)
        finally:
            for ctx in mine:
                if ctx.task and not ctx.task.done():
                    ctx.task.cancel()
            self._outs.remove(out)
            self.forget_ws(ws)
            await self.changed()
        return ws

    async def _on_message(self, out: FaultyStream, data: str, mine: list) -> None:
        try:
            msg = json.loads(data)
        except json.JSONDecodeError:
            await self._error(out, None, "message is not valid JSON")
            return
        context_id = msg.get("context_id")
        if msg.get("cancel"):
            self.cancels.append(context_id)
            ctx = self.contexts.get(context_id)
            if ctx:
                ctx.cancelled = True
                if ctx.task and not ctx.task.done():
                    ctx.task.cancel()
            await self.changed()
            return
        problem = self._invalid(msg)
        if problem:
            await self._error(out, context_id, problem)
            return
        ctx = self.contexts.get(context_id)
        if ctx is not None and ctx.expired and not ctx.finished_input:
            ctx.rejected.append(msg.get("transcript", ""))
            await self._error(out, context_id, "Context has expired.", 400, "context_expired")
            return
        if ctx is None or ctx.done:
            if self.refuse_contexts > 0:
                self.refuse_contexts -= 1
                self.refused.append(context_id)
                await self._error(
                    out, context_id, "Too many concurrent requests.", 429, "concurrency_limited"
                )
                return
            ctx = CartesiaContext(
                context_id=context_id,
                model_id=msg["model_id"],
                voice=msg["voice"],
                output_format=msg["output_format"],
                add_timestamps=bool(msg.get("add_timestamps")),
                expiry_secs=self.expiry_secs,
            )
            self.contexts[context_id] = ctx
            mine.append(ctx)
            ctx.task = asyncio.create_task(self._generate(out, ctx))
        if ctx.cancelled or ctx.finished_input:
            return  # inputs after cancel or after continue=false are ignored
        transcript = msg.get("transcript", "")
        more = bool(msg.get("continue", False))
        ctx.texts.append(transcript)
        ctx.continues.append(more)
        ctx.finished_input = not more
        await ctx.queue.put((transcript, more))
        await self.changed()

    @staticmethod
    def _invalid(msg: dict) -> str | None:
        if not msg.get("context_id"):
            return "context_id is required"
        if not msg.get("model_id"):
            return "model_id is required"
        voice = msg.get("voice")
        if not isinstance(voice, dict) or voice.get("mode") != "id" or not voice.get("id"):
            return "voice must be {mode: 'id', id: ...}"
        fmt = msg.get("output_format")
        if (
            not isinstance(fmt, dict)
            or fmt.get("container") != "raw"
            or fmt.get("encoding") not in SUPPORTED_ENCODINGS
            or not isinstance(fmt.get("sample_rate"), int)
            or fmt["sample_rate"] <= 0
        ):
            return "output_format must be raw pcm_s16le/pcm_f32le with an integer sample_rate"
        if not isinstance(msg.get("transcript", ""), str):
            return "transcript must be a string"
        return None

    async def _error(
        self, out: FaultyStream, context_id, message: str, status=400, code="invalid_request"
    ) -> None:
        titles = {400: "Invalid request", 429: "Too many requests", 500: "Internal error"}
        payload = {
            "type": "error",
            "done": True,
            "status_code": status,
            "error_code": code,
            "title": titles.get(status, "Error"),
            "message": message,
            "request_id": str(uuid.uuid4()),
        }
        if context_id:
            payload["context_id"] = context_id
        self.errors_sent.append(payload)
        await out.send(payload)
        await self.changed()

    # --- generation -----------------------------------------------------------------------

    async def _generate(self, out: FaultyStream, ctx: CartesiaContext) -> None:
        try:
            while True:
                transcript, more = await ctx.queue.get()
                if transcript.strip():
                    ctx.generating = True
                    try:
                        await self._speak(out, ctx, transcript)
                    finally:
                        ctx.generating = False
                if not more:
                    done = {"type": "done", "done": True, "status_code": 206}
                    if await out.send({**done, "context_id": ctx.context_id}):
                        ctx.done = True
                    await self.changed()
                    return
        except asyncio.CancelledError:
            pass

    async def _speak(self, out: FaultyStream, ctx: CartesiaContext, transcript: str) -> None:
        rate = ctx.output_format["sample_rate"]
        secs = max(0.2, self.secs_per_char * len(transcript.strip()))
        start = ctx.audio_secs
        ctx.audio_secs += secs
        if ctx.add_timestamps:
            words = transcript.split()
            per = secs / max(len(words), 1)
            await out.send(
                {
                    "type": "timestamps",
                    "done": False,
                    "status_code": 206,
                    "context_id": ctx.context_id,
                    "word_timestamps": {
                        "words": words,
                        "start": [round(start + i * per, 3) for i in range(len(words))],
                        "end": [round(start + (i + 1) * per, 3) for i in range(len(words))],
                    },
                }
            )
        audio = self.waveform(secs, rate, start, ctx.output_format["encoding"])
        step = max(1, int(self.chunk_secs * rate)) * audio.itemsize
        data = audio.tobytes()
        for offset in range(0, len(data), step):
            if (
                self.hold_after_chunks is not None
                and ctx.chunks_sent >= self.hold_after_chunks
                and not self.holds_released.is_set()
            ):
                await self.changed()
                await self.holds_released.wait()
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            piece = data[offset : offset + step]
            sent = await out.send(
                {
                    "type": "chunk",
                    "data": base64.b64encode(piece).decode(),
                    "done": False,
                    "status_code": 206,
                    "step_time": 10,
                    "context_id": ctx.context_id,
                }
            )
            if sent:
                ctx.chunks_sent += 1
                ctx.audio_bytes_sent += len(piece)
                ctx.last_audio_at = time.monotonic()
            await self.changed()

    def waveform(self, secs: float, rate: int, offset: float, encoding: str) -> np.ndarray:
        """A loud tone with a soft attack/release: clearly not silence."""
        n = int(secs * rate)
        t = offset + np.arange(n) / rate
        envelope = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / (0.01 * rate))
        wave = 0.5 * np.sin(2 * np.pi * self.frequency * t) * envelope
        if encoding == "pcm_f32le":
            return wave.astype(np.float32)
        return (wave * 32767).astype(np.int16)
