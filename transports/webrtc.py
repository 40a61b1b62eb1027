"""WebRTC sessions over Pipecat's SmallWebRTC transport (aiortc), loopback-friendly."""

from __future__ import annotations

from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

from bot.config import Settings


def webrtc_params(settings: Settings) -> TransportParams:
    return TransportParams(audio_in_enabled=True, audio_out_enabled=True)


def create_webrtc_transport(
    connection: SmallWebRTCConnection, settings: Settings
) -> SmallWebRTCTransport:
    return SmallWebRTCTransport(webrtc_connection=connection, params=webrtc_params(settings))
