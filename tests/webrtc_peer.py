"""A WebRTC caller for tests, as a browser would be: aiortc sending a microphone track
(silence) and a data channel (RTVI's client-ready once open), signalling over the server's
/api/offer."""

from __future__ import annotations

import asyncio
import json

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack


async def offer_sdp() -> str:
    """A real offer (audio and a data channel, host candidates gathered), never answered."""
    pc = RTCPeerConnection()
    try:
        pc.addTrack(AudioStreamTrack())
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


class WebRTCCaller:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.pc = RTCPeerConnection()
        self.connected = asyncio.Event()
        self.pc_id: str | None = None
        self.messages: list[dict] = []  # what the server sent on the data channel (RTVI)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

    async def call(self, request_data: dict | None = None) -> httpx.Response:
        self.pc.addTrack(AudioStreamTrack())
        channel = self.pc.createDataChannel("chat")

        @channel.on("open")
        def ready() -> None:  # as Pipecat's JS client does once connected
            channel.send(json.dumps({"label": "rtvi-ai", "type": "client-ready", "id": "c1",
                                     "data": {"version": "1.0.0"}}))

        @channel.on("message")
        def receive(message) -> None:
            if isinstance(message, str):
                self.messages.append(json.loads(message))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if request_data is not None:
            offer["requestData"] = request_data  # as Pipecat's JS SDK names it
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            r = await http.post("/api/offer", json=offer)
        if r.status_code == 200:
            answer = r.json()
            self.pc_id = answer["pc_id"]
            await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return r

    async def hang_up(self) -> None:
        await self.pc.close()
