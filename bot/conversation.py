"""Hold one conversation from WAV files through `run_bot` (CLI, demo, tests, benchmarks)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bot.pipeline import run_bot

from bot.session import Session
from processors.observers.turn_record import TurnRecord
from transports.file import FileTransport, FileTransportParams, Utterance


@dataclass
class ConversationResult:
    turns: list[TurnRecord] = field(default_factory=list)
    transport: FileTransport | None = None

    def turn_dicts(self) -> list[dict]:
        return [t.to_dict() for t in sorted(self.turns, key=lambda t: t.turn)]

    def write_transcript(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for record in self.turn_dicts():
                f.write(json.dumps(record) + "\n")

    def write_audio(self, path: Path) -> None:
        self.transport.write_bot_audio(path)


async def converse(
    script: list[Utterance], session: Session, params: FileTransportParams | None = None
) -> ConversationResult:
    transport = FileTransport(script, params)
    result = ConversationResult(transport=transport)
    session.transport_kind = "file"
    session.on_turn = [*session.on_turn, result.turns.append]
    await run_bot(transport, session)
    return result
