"""One live Deepgram stream at the peer (tests/peers/deepgram.py): audio measured in audio time,
scripted utterances revealed as interim and final `Results`, `Finalize`, `CloseStream`,
`KeepAlive` and the idle timeout, as the module docstring there describes."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from aiohttp import WSMsgType, web

from tests.peers._server import FaultyStream
from tests.support.audio import rms

if TYPE_CHECKING:
    from tests.peers.deepgram import DeepgramPeer

WINDOW_SECS = 0.02


@dataclass
class DeepgramConnection:
    """One live transcription session as the peer saw it."""

    query: dict[str, str]
    headers: dict[str, str]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    audio_bytes: int = 0
    control: list[dict] = field(default_factory=list)  # KeepAlive, Finalize, CloseStream...
    sent: list[dict] = field(default_factory=list)  # every message the peer sent
    closed_by: str = ""  # "client", "CloseStream", "idle", "fault", "rejected"

    @property
    def sample_rate(self) -> int:
        return int(self.query.get("sample_rate", 16000))

    def control_types(self) -> list[str]:
        return [m.get("type", "?") for m in self.control]

    def results(self, final: bool | None = None) -> list[dict]:
        return [
            m
            for m in self.sent
            if m.get("type") == "Results" and (final is None or m.get("is_final") is final)
        ]


@dataclass
class Utterance:
    text: str
    start: float
    words_shown: int = 0
    words_final: int = 0  # words already sent in a final
    speech_ms: float = 0.0
    speech_ms_since_interim: float = 0.0
    speech_ms_since_final: float = 0.0
    silence_ms: float = 0.0
    endpointed: bool = False  # a final went out at the current pause
    lose_tail: bool = False
    segment_start: float = 0.0
    last_speech_end: float = 0.0

    @property
    def words(self) -> list[str]:
        return self.text.split()


class DeepgramStream:
    def __init__(self, peer: DeepgramPeer, conn: DeepgramConnection, out: FaultyStream):
        self.peer = peer
        self.conn = conn
        self.out = out
        q = conn.query
        self.interim = q.get("interim_results", "false").lower() == "true"
        endpointing = q.get("endpointing")
        self.endpointing_ms = (
            float(endpointing)
            if endpointing not in (None, "", "false", "true")
            else peer.endpointing_ms
        )
        self.utterance_end_ms = float(q["utterance_end_ms"]) if q.get("utterance_end_ms") else None
        self.channels = int(q.get("channels", 1))
        self.window = int(conn.sample_rate * WINDOW_SECS) * self.channels
        self.pending = np.zeros(0, dtype=np.int16)
        self.samples = 0  # per channel, i.e. audio time * sample rate
        self.utt: Utterance | None = None
        self.last_word_end: float | None = None  # awaiting UtteranceEnd

    @property
    def now(self) -> float:
        return self.samples / self.conn.sample_rate

    async def run(self, ws: web.WebSocketResponse) -> None:
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), self.peer.idle_timeout)
            except TimeoutError:
                self.conn.closed_by = "idle"
                await ws.close(code=1011, message=b"NET-0001: no audio received")
                return
            if msg.type == WSMsgType.BINARY:
                self.conn.audio_bytes += len(msg.data)
                await self.on_audio(msg.data)
                await self.peer.changed()
            elif msg.type == WSMsgType.TEXT:
                if not await self.on_text(ws, msg.data):
                    return
            else:  # CLOSE, CLOSED, ERROR
                return

    # --- audio: energy detection in audio time --------------------------------------------

    async def on_audio(self, data: bytes) -> None:
        pcm = np.frombuffer(data[: len(data) - len(data) % 2], dtype=np.int16)
        self.pending = np.concatenate([self.pending, pcm])
        while len(self.pending) >= self.window:
            chunk, self.pending = self.pending[: self.window], self.pending[self.window :]
            self.samples += self.window // self.channels
            await self.on_window(rms(chunk.tobytes()) >= self.peer.rms_threshold)

    async def on_window(self, speech: bool) -> None:
        step_ms = WINDOW_SECS * 1000
        peer = self.peer
        if speech:
            if self.utt is None:
                text = peer.transcripts.popleft() if peer.transcripts else ""
                self.utt = Utterance(text=text, start=self.now - WINDOW_SECS)
                self.utt.segment_start = self.utt.start
                if peer.lose_tails > 0:
                    peer.lose_tails -= 1
                    self.utt.lose_tail = True
                self.last_word_end = None
            utt = self.utt
            if utt.endpointed:  # speech again after a final: a new segment
                utt.segment_start, utt.endpointed = self.now - WINDOW_SECS, False
            utt.silence_ms = 0.0
            utt.last_speech_end = self.now
            utt.speech_ms += step_ms
            utt.speech_ms_since_interim += step_ms
            utt.speech_ms_since_final += step_ms
            heard = int(utt.speech_ms / peer.ms_per_word) + 1
            utt.words_shown = max(utt.words_shown, min(len(utt.words), heard))
            if self.interim and utt.speech_ms_since_interim >= peer.interim_every_ms:
                utt.speech_ms_since_interim = 0.0
                if utt.words_shown > utt.words_final:
                    await self.send_results(
                        " ".join(utt.words[utt.words_final : utt.words_shown]),
                        is_final=False,
                        speech_final=False,
                        start=utt.segment_start,
                    )
            if peer.final_every_ms and utt.speech_ms_since_final >= peer.final_every_ms:
                await self.final_segment(speech_final=False, periodic=True)
        elif self.utt is not None:
            utt = self.utt
            utt.silence_ms += step_ms
            # Deepgram's own VAD does not hear the gaps between words as silence: a
            # pause is `pause_ms`, and endpointing counts from there.
            pause = self.peer.pause_ms + self.endpointing_ms
            if utt.silence_ms >= pause and not utt.endpointed:
                utt.endpointed = True
                await self.final_segment(speech_final=True)
            if utt.silence_ms >= peer.utterance_gap_ms:
                await self.finalize(speech_final=True)
        elif self.last_word_end is not None and self.utterance_end_ms is not None:
            if (self.now - self.last_word_end) * 1000 >= self.utterance_end_ms:
                await self.emit(
                    {
                        "type": "UtteranceEnd",
                        "channel": [0, self.channels],
                        "last_word_end": round(self.last_word_end, 3),
                    }
                )
                self.last_word_end = None

    async def final_segment(
        self, *, speech_final: bool, from_finalize: bool | None = None, periodic: bool = False
    ):
        """A final with the words heard since the last one (nothing if there are none).
        An utterance losing its tail gets only its periodic finals."""
        utt = self.utt
        utt.speech_ms_since_final = 0.0
        upto = min(utt.words_shown, len(utt.words) - 1) if utt.lose_tail else utt.words_shown
        if upto <= utt.words_final or (utt.lose_tail and not periodic):
            return
        words = utt.words[utt.words_final : upto]
        utt.words_final = upto
        await self.send_results(
            " ".join(words),
            is_final=True,
            speech_final=speech_final,
            from_finalize=from_finalize,
            start=utt.segment_start,
            end=utt.last_speech_end or self.now,
        )
        utt.segment_start = utt.last_speech_end or self.now
        self.last_word_end = utt.last_speech_end

    async def finalize(self, *, speech_final: bool, from_finalize: bool | None = None) -> None:
        """The utterance ends: every word not finalized yet goes in one last final."""
        utt = self.utt
        if utt is None:
            await self.send_results(
                "", is_final=True, speech_final=False, from_finalize=from_finalize
            )
            return
        utt.words_shown = len(utt.words)
        before = utt.words_final
        await self.final_segment(speech_final=speech_final, from_finalize=from_finalize)
        if utt.words_final == before and from_finalize:
            # Nothing left to say: Deepgram still confirms the Finalize, empty.
            await self.send_results(
                "", is_final=True, speech_final=False, from_finalize=True
            )
        self.utt = None
        self.last_word_end = (utt.last_speech_end or self.now) if utt.text else None

    # --- control messages -----------------------------------------------------------------

    async def on_text(self, ws: web.WebSocketResponse, data: str) -> bool:
        try:
            message = json.loads(data)
            kind = message["type"]
        except (json.JSONDecodeError, KeyError, TypeError):
            self.conn.control.append({"type": "<unparsable>", "raw": data})
            await self.peer.changed()
            await self.emit(self.schema_error("could not parse the client message", data))
            return True
        self.conn.control.append(message)
        await self.peer.changed()
        if kind == "KeepAlive":
            return True
        if kind == "Finalize":
            if self.peer.confirm_finalize and not (self.utt and self.utt.lose_tail):
                await self.finalize(speech_final=False, from_finalize=True)
            return True
        if kind == "CloseStream":
            if self.utt is not None:
                await self.finalize(speech_final=True)
            await self.emit(self.metadata())
            self.conn.closed_by = "CloseStream"
            await ws.close(code=1000)
            return False
        await self.emit(self.schema_error(f"unknown message type {kind!r}", data))
        return True

    @staticmethod
    def schema_error(description: str, raw: str) -> dict:
        return {
            "type": "Error",
            "variant": "SchemaError",
            "description": description,
            "message": raw,
        }

    # --- messages -------------------------------------------------------------------------

    async def emit(self, message: dict) -> None:
        """Send a message (through the connection's fault) and record it if it went out."""
        if await self.out.send(message):
            self.conn.sent.append(message)

    async def send_results(
        self,
        transcript: str,
        *,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> None:
        start = self.utt.start if start is None and self.utt else (start or self.now)
        end = self.now if end is None else end
        words = transcript.split()
        span = max(end - start, 0.001)
        word_items = [
            {
                "word": w.strip(".,!?;:").lower() or w,
                "start": round(start + span * i / len(words), 3),
                "end": round(start + span * (i + 1) / len(words), 3),
                "confidence": 0.99,
                "punctuated_word": w,
            }
            for i, w in enumerate(words)
        ]
        message = {
            "type": "Results",
            "channel_index": [0, self.channels],
            "duration": round(span, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {"transcript": transcript, "confidence": 0.99, "words": word_items}
                ]
            },
            "metadata": {
                "request_id": self.conn.request_id,
                "model_info": {
                    "name": self.conn.query.get("model", "nova-3-general"),
                    "version": "loopback-peer",
                    "arch": "peer",
                },
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }
        if from_finalize is not None:
            message["from_finalize"] = from_finalize
        await self.emit(message)
        await self.peer.changed()

    def metadata(self) -> dict:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.conn.request_id,
            "sha256": "0" * 64,
            "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "duration": round(self.now, 3),
            "channels": self.channels,
        }
