"""Opt-in session recording: a JSONL of turns and a stereo WAV per session, with retention.

Each session writes `<start time>-<session id>.jsonl` (one line per turn: the turn record,
its moments and the wall-clock time) and, with RECORDING_AUDIO, `<…>.wav`: 16-bit stereo,
the user on the left channel and the bot on the right, from Pipecat's
`AudioBufferProcessor` placed after the output transport (so the bot side is what was
actually sent, interruptions included).

Retention (RECORDING_MAX_SESSIONS, RECORDING_MAX_BYTES) is enforced before every write:
the oldest recordings are deleted first. Recordings still being written (by this process)
are never deleted; if they alone would break a limit, the write is skipped — the session
stops recording and says so once in the log — so the folder never exceeds its bounds.
"""

from __future__ import annotations

import json
import os
import re
import time
import wave
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger

from bot.config import Settings
from processors.observers.turn_record import TurnRecord

_NAME = re.compile(r"^(\d{8}T\d{12}Z-[A-Za-z0-9_-]+)\.(jsonl|wav)$")
WAV_HEADER_BYTES = 44
# Seconds of audio buffered before it is written (per flush, both tracks).
AUDIO_FLUSH_SECS = 2.0

# Recordings being written by this process, by folder: never pruned.
_active: dict[Path, set[str]] = {}


@dataclass
class Recording:
    stem: str
    files: list[Path]
    bytes: int


class RecordingFolder:
    """A folder of recordings and its two limits."""

    def __init__(self, folder: Path, max_sessions: int, max_bytes: int):
        self.folder = Path(folder).resolve()
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordingFolder:
        return cls(
            settings.recording_dir, settings.recording_max_sessions, settings.recording_max_bytes
        )

    @property
    def active(self) -> set[str]:
        return _active.setdefault(self.folder, set())

    def recordings(self) -> list[Recording]:
        """Every recording in the folder, oldest first (other files are left alone)."""
        groups: dict[str, Recording] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                match = _NAME.match(entry.name)
                if not match or not entry.is_file():
                    continue
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:
                    continue
                group = groups.setdefault(match[1], Recording(match[1], [], 0))
                group.files.append(Path(entry.path))
                group.bytes += size
        # A live recording counts from its start, before it has written anything.
        for stem in self.active:
            groups.setdefault(stem, Recording(stem, [], 0))
        return [groups[stem] for stem in sorted(groups)]

    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.recordings())

    def make_room(self, bytes: int = 0) -> bool:
        """Delete the oldest finished recordings until the folder holds at most
        RECORDING_MAX_SESSIONS recordings and `bytes` more bytes fit; False if that is not
        possible (live recordings alone fill it)."""
        recordings = self.recordings()
        count = len(recordings)
        total = sum(r.bytes for r in recordings)
        for oldest in recordings:
            if count <= self.max_sessions and total + bytes <= self.max_bytes:
                break
            if oldest.stem in self.active:
                continue
            for path in oldest.files:
                path.unlink(missing_ok=True)
            count -= 1
            total -= oldest.bytes
            logger.debug(f"Recording {oldest.stem} deleted (retention)")
        return count <= self.max_sessions and total + bytes <= self.max_bytes


class SessionRecorder:
    """One session's recording: `write_turn` per turn, `write_audio` per audio chunk."""

    def __init__(
        self, folder: RecordingFolder, session_id: str, *, audio: bool, sample_rate: int = 16000
    ):
        self.folder = folder
        self.session_id = session_id
        self.sample_rate = sample_rate
        safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", session_id) or "session"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.stem = f"{stamp}-{safe_id}"
        self.turns_path = folder.folder / f"{self.stem}.jsonl"
        self.audio_path = folder.folder / f"{self.stem}.wav" if audio else None
        self._wav: wave.Wave_write | None = None
        self._closed = False
        self.stopped_reason: str | None = None
        folder.active.add(self.stem)
        if not folder.make_room():
            folder.active.discard(self.stem)
            self._stop("RECORDING_MAX_SESSIONS sessions are being recorded already")

    @classmethod
    def from_settings(cls, settings: Settings, session_id: str) -> SessionRecorder:
        return cls(
            RecordingFolder.from_settings(settings),
            session_id,
            audio=settings.recording_audio,
            sample_rate=settings.recording_sample_rate,
        )

    @property
    def recording(self) -> bool:
        return not self._closed and self.stopped_reason is None

    def _stop(self, reason: str) -> None:
        if self.stopped_reason is None:
            self.stopped_reason = reason
            logger.warning(f"Session recording stopped: {reason}")
            self._close_wav()

    def _fits(self, nbytes: int) -> bool:
        if not self.recording:
            return False
        if not self.folder.make_room(bytes=nbytes):
            self._stop("RECORDING_MAX_BYTES reached by live recordings")
            return False
        return True

    def write_turn(self, record: TurnRecord | dict) -> None:
        if isinstance(record, TurnRecord):
            from bot.logs import turn_moments_ms

            line = {**record.to_dict(), "moments_ms": turn_moments_ms(record)}
        else:
            line = dict(record)
        line["time"] = round(time.time(), 3)
        data = (json.dumps(line) + "\n").encode()
        if self._fits(len(data)):
            with self.turns_path.open("ab") as f:
                f.write(data)

    def write_audio(self, pcm: bytes, sample_rate: int, num_channels: int) -> None:
        if not pcm or self.audio_path is None:
            return
        header = WAV_HEADER_BYTES if self._wav is None else 0
        if not self._fits(len(pcm) + header):
            return
        if self._wav is None:
            self._wav = wave.open(str(self.audio_path), "wb")
            self._wav.setnchannels(num_channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(sample_rate)
        # Writing patches the header, so the file is a valid WAV after every chunk.
        self._wav.writeframes(pcm)

    def audio_processor(self):
        """An `AudioBufferProcessor` feeding `write_audio`; place it after transport.output()."""
        from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor

        buffer = AudioBufferProcessor(
            sample_rate=self.sample_rate,
            num_channels=2,
            buffer_size=int(self.sample_rate * 2 * AUDIO_FLUSH_SECS),
            auto_start_recording=True,
        )

        @buffer.event_handler("on_audio_data")
        async def on_audio_data(_, audio: bytes, sample_rate: int, num_channels: int):
            self.write_audio(audio, sample_rate, num_channels)

        return buffer

    def _close_wav(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None

    def close(self) -> None:
        if self._closed:
            return
        self._close_wav()
        self._closed = True
        self.folder.active.discard(self.stem)
