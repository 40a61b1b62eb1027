"""Daily rooms: the bot joins a room with Pipecat's Daily transport."""

from __future__ import annotations

from pipecat.transports.daily.transport import DailyParams, DailyTransport

from bot.config import Settings


def daily_params(settings: Settings) -> DailyParams:
    return DailyParams(audio_in_enabled=True, audio_out_enabled=True)


def create_daily_transport(room_url: str, token: str, settings: Settings) -> DailyTransport:
    return DailyTransport(room_url, token, "Voice agent", params=daily_params(settings))
