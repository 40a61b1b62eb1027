"""What the outside probe (tests/abuse/) sends: raw protobuf frames and RTVI messages."""

from __future__ import annotations

import json

import pipecat.frames.protobufs.frames_pb2 as proto

from web.ws_client import AgentClient

TOKEN = "abuse-admin-token-5d2c8e"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FOREIGN = "https://evil.example"


def audio_frame(samples: int = 320, rate: int = 16000) -> bytes:
    frame = proto.Frame()
    frame.audio.audio, frame.audio.sample_rate, frame.audio.num_channels = (
        b"\0\0" * samples,
        rate,
        1,
    )
    return frame.SerializeToString()


def rtvi_frame(kind: str, data: dict | None = None, **fields) -> bytes:
    frame = proto.Frame()
    frame.message.data = json.dumps(
        {"label": "rtvi-ai", "type": kind, "id": "m1", "data": data or {}, **fields}
    )
    return frame.SerializeToString()


async def session_of(client: AgentClient) -> str:
    assert await client.wait_for(lambda r: r.server_messages("session"), 20), (
        client.close_code,
        client.close_reason,
    )
    return client.received.server_messages("session")[0]["session_id"]

