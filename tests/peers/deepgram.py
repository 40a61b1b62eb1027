"""Deepgram live streaming STT (Nova, `/v1/listen`) over a loopback WebSocket.

Follows (as read 2026-12-04) developers.deepgram.com: https://developers.deepgram.com/
reference/speech-to-text/listen-streaming (the live API), .../docs/understand-endpointing-
interim-results (endpointing, default 10 ms; several `is_final` results per utterance),
.../docs/utterance-end, .../docs/finalize ("not guaranteed" to be answered with
`from_finalize: true`), .../docs/close-stream, .../docs/audio-keep-alive,
.../docs/errors (429 on the handshake: the concurrency limit), .../reference/
management-api/models/list (`GET /v1/models`), and the message schemas of deepgram-sdk
v7 (`deepgram.listen.v1.types`):

- `GET /v1/listen` upgraded to a WebSocket; query parameters as the SDK sends them
  (`model`, `encoding=linear16`, `sample_rate`, `channels`, `interim_results`,
  `endpointing`, `utterance_end_ms`, `punctuate`, `smart_format`, ...); auth header
  `Authorization: Token <key>` (or `Bearer <token>`); a bad key is refused with HTTP 401,
  an unknown model with HTTP 400, and `Fault.HTTP_429` is the concurrency limit.
- Binary frames: raw linear16 PCM. The peer cannot recognise speech: it measures energy
  (RMS per 20 ms of audio, in audio time) and plays a queue of scripted transcripts, one
  per utterance (speech up to `utterance_gap_ms`, 300, of silence), its words revealed as
  the speech goes on (`ms_per_word`; any left at the utterance's end). Interim
  `Results` (`is_final: false`) every `interim_every_ms` of speech; at every endpoint
  (`endpointing` ms, 10 by default as Deepgram's, after a pause its VAD hears: `pause_ms`
  of low energy, not the gaps between words) a final (`is_final: true,
  speech_final: true`) with the words heard since the last final, so one utterance often
  gets several finals; `final_every_ms` also finalizes long stretches of speech. After
  `utterance_gap_ms` the words left are finalized, and `UtteranceEnd` follows when
  `utterance_end_ms` was requested.
  `lose_tails=N`: the next N utterances get their periodic finals (`final_every_ms`)
  only, never with their last word: the words after the last final are never
  finalized (however long the speech the peer hears), a `Finalize` gets no answer.
- Text frames: `{"type": "KeepAlive"}` (no reply), `{"type": "Finalize"}` (the open
  utterance is finalised at once with `from_finalize: true` — unless
  `confirm_finalize=False`: not answered at all), `{"type": "CloseStream"}` (flush, then
  a `Metadata` summary, then a normal 1000 close). An unparsable text frame gets an
  `Error` message (`variant: SchemaError`).
- No audio and no KeepAlive for `idle_timeout` seconds (10 by default, as documented)
  closes the socket with code 1011 and reason `NET-0001`.
- `GET /v1/models`: `{"stt": [{name, canonical_name, architecture, languages, ...}],
  "tts": [...]}`.

The URL layout matches what `DeepgramSTTService(base_url=peer.ws_url)` requests: Pipecat's
`_derive_deepgram_urls` keeps `ws://` for an insecure base URL and the SDK appends
`/v1/listen`.
"""

from __future__ import annotations

import uuid
from collections import deque

from aiohttp import web

from tests.peers._server import FaultyStream, PeerServer
from tests.peers.deepgram_stream import DeepgramConnection, DeepgramStream

DEFAULT_MODELS = ("nova-3", "nova-3-general", "nova-3-medical", "nova-2", "nova-2-general")


class DeepgramPeer(PeerServer):
    name = "deepgram"

    def __init__(
        self,
        transcripts: list[str] | tuple[str, ...] = (),
        *,
        api_key: str | None = None,
        rms_threshold: float = 400.0,
        endpointing_ms: float = 10.0,
        pause_ms: float = 150.0,
        utterance_gap_ms: float = 300.0,
        ms_per_word: float = 200.0,
        interim_every_ms: float = 200.0,
        final_every_ms: float | None = None,
        confirm_finalize: bool = True,
        lose_tails: int = 0,
        idle_timeout: float | None = 10.0,
        models: tuple[str, ...] = DEFAULT_MODELS,
    ):
        super().__init__(api_key=api_key)
        self.transcripts: deque[str] = deque(transcripts)
        self.rms_threshold = rms_threshold
        self.endpointing_ms = endpointing_ms
        self.pause_ms = pause_ms
        self.utterance_gap_ms = utterance_gap_ms
        self.ms_per_word = ms_per_word
        self.interim_every_ms = interim_every_ms
        self.final_every_ms = final_every_ms
        self.confirm_finalize = confirm_finalize
        self.lose_tails = lose_tails
        self.idle_timeout = idle_timeout
        self.models = models
        self.connections: list[DeepgramConnection] = []

    def script(self, *texts: str) -> None:
        """Queue what the next utterances "said", one text per utterance."""
        self.transcripts.extend(texts)

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self._listen)
        app.router.add_get("/v1/models", self._models)

    async def _models(self, request: web.Request):
        await self.record(request)
        if not self.key_ok(self._key(request)):
            return self.error_response(401, "Invalid credentials.")
        arch = {"nova-3": "nova-3", "nova-2": "nova-2"}
        stt = [
            {
                "name": m.split("-")[-1] if m.count("-") > 1 else "general",
                "canonical_name": m,
                "architecture": next((a for a in arch if m.startswith(a)), m),
                "languages": ["en"],
                "version": "2025-01-01.0",
                "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, m)),
                "batch": True,
                "streaming": True,
            }
            for m in self.models
        ]
        return web.json_response({"stt": stt, "tts": []})

    @staticmethod
    def _key(request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth.split(" ", 1)[1] if auth.startswith(("Token ", "Bearer ")) else None

    def error_body(self, status: int, message: str) -> dict:
        return {
            "err_code": "INVALID_AUTH" if status == 401 else f"HTTP_{status}",
            "err_msg": message,
            "request_id": str(uuid.uuid4()),
        }

    # --- the session ----------------------------------------------------------------------

    async def _listen(self, request: web.Request):
        key = self._key(request)
        conn = DeepgramConnection(dict(request.query), dict(request.headers))
        self.connections.append(conn)
        await self.changed()
        if not self.key_ok(key):
            conn.closed_by = "rejected"
            return self.error_response(401, "Invalid credentials.")
        if conn.query.get("encoding", "linear16") != "linear16":
            conn.closed_by = "rejected"
            return self.error_response(400, "this peer only speaks linear16")
        if conn.query.get("model", "nova-3") not in self.models:
            conn.closed_by = "rejected"
            return self.error_response(400, f"No such model: {conn.query.get('model')}")
        spec, response = await self.ws_handshake_fault(request)
        if response is not None:
            conn.closed_by = "fault"
            await self.changed()
            return response

        ws = await self.accept_ws(request)
        out = FaultyStream(self, ws, request, spec, wrong_shape=self._wrong_shape())
        session = DeepgramStream(self, conn, out)
        try:
            await session.run(ws)
        finally:
            self.forget_ws(ws)
            if not conn.closed_by:
                conn.closed_by = "fault" if out.dropped else "client"
            await self.changed()
        return ws

    @staticmethod
    def _wrong_shape() -> dict:
        return {"type": "Results", "channel": "not-an-object", "is_final": "maybe"}

