"""The web client (web/client) in Debian's Chromium against a server played by the test.

The built page is served as static files and the server is played by Playwright routes
(tests/support/played_bot.py): interruptions flushing WebSocket playback, what the server
says shown on the page, a session the server ends, a dropped WebSocket resuming its
conversation. The page's errors: tests/test_browser_errors.py.
"""

from __future__ import annotations

import pytest

from tests.support.browser import expect_error, needs_chromium
from tests.support.played_bot import (
    connected_to_a_played_bot,
    frame_bytes,
    rtvi_bytes,
    tone_frames,
)

pytestmark = needs_chromium


@pytest.mark.parametrize("signal", ["interruption-frame", "bot-interrupted"])
def test_websocket_playback_stops_on_interruption(static_site, playwright, signal):
    """3 s of bot audio queued, an interruption after ~0.6 s: the rest is dropped unplayed,
    whether the server's in-band InterruptionFrame or RTVI bot-interrupted says so, and
    the next answer still plays."""
    with connected_to_a_played_bot(static_site, playwright) as (caller, bot):

        bot.send(rtvi_bytes("bot-started-speaking"))
        said = "Engines burn fuel."
        progress = {"accumulated_text": said, "remaining_text": ""}
        bot.send(
            rtvi_bytes(
                "bot-output",
                {
                    "text": said,
                    "segment_id": 1,
                    "will_be_spoken": True,
                    "spoken_status": "completed",
                    "spoken_progress": progress,
                },
            )
        )
        for frame in tone_frames(3.0):
            bot.send(frame)
        caller.wait(
            "() => window.voiceAgent.stats.playedAudioMs > 600", "playback to start", 20_000
        )
        played_before = caller.agent()["stats"]["playedAudioMs"]
        bot.send(
            frame_bytes(interruption={})
            if signal == "interruption-frame"
            else rtvi_bytes("bot-interrupted")
        )
        caller.wait(
            "() => window.voiceAgent.stats.flushedAudioMs > 0", "the player to flush", 10_000
        )

        stats = caller.agent()["stats"]
        assert stats["receivedAudioMs"] == pytest.approx(3000, abs=1)
        # Stopped where it was (give or take a report interval and the round trip)...
        assert stats["playedAudioMs"] - played_before < 250
        # ...and the rest was dropped: nothing is left to play.
        assert stats["playedAudioMs"] + stats["flushedAudioMs"] == pytest.approx(3000, abs=1)
        assert stats["interruptions"] == 1
        bubble = caller.agent()["transcript"][-1]
        assert bubble["role"] == "bot" and bubble["text"] == said
        # RTVI bot-interrupted also ends the bot's bubble as cut off.
        assert bubble.get("interrupted", False) == (signal == "bot-interrupted")

        # The next answer is not swallowed by the flush.
        for frame in tone_frames(0.6):
            bot.send(frame)
        caller.wait(
            f"() => window.voiceAgent.stats.playedAudioMs >= {stats['playedAudioMs'] + 590}",
            "the next answer to play",
            20_000,
        )
        assert caller.page_errors == []


def test_server_ends_websocket_session(static_site, playwright):
    """Ended by the server (1000): reported, and never resumed, ticket or not."""
    with connected_to_a_played_bot(static_site, playwright) as (caller, bot):
        data = {"type": "session", "session_id": "s", "transport": "websocket", "resume_token": "t"}
        bot.send(rtvi_bytes("server-message", data))
        caller.wait("() => window.voiceAgent.sessionId === 's'", "the session message")
        bot.ws.close(code=1000, reason="idle for 300 s")
        message = expect_error(caller, "server", "the server ended the session")
        assert len(bot.urls) == 1, bot.urls
        assert "idle for 300 s" in message


def test_a_dropped_websocket_resumes_its_conversation(static_site, playwright):
    """The connection drops (here: the session's process failed, 1011) while the server
    keeps the conversation: the page reconnects with the ticket of the server's `session`
    message and carries on with its transcript; a resume the server refuses ends the
    session with why."""
    from urllib.parse import parse_qs, urlparse

    def session_message(session_id: str, token: str) -> None:
        data = {"type": "session", "session_id": session_id, "transport": "websocket"}
        bot.send(rtvi_bytes("server-message", {**data, "resume_token": token}))
        caller.wait(f"() => window.voiceAgent.sessionId === '{session_id}'", "the session message")

    def asked_to_resume(url: str) -> dict:
        return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}

    with connected_to_a_played_bot(static_site, playwright) as (caller, bot):
        session_message("first", "token-1")
        said = {"text": "My name is Ada.", "final": True, "user_id": "", "timestamp": ""}
        bot.send(rtvi_bytes("user-transcription", said))
        caller.wait("() => window.voiceAgent.transcript.length === 1", "the user's words")

        bot.ws.close(code=1011, reason="the session's process failed")
        caller.wait("() => window.voiceAgent.reconnects === 1", "the conversation resumed")
        assert len(bot.urls) == 2 and asked_to_resume(bot.urls[1]) == {
            "session_id": "first",
            "resume_token": "token-1",
        }, bot.urls
        agent = caller.agent()
        assert agent["connected"] and agent["errors"] == [], agent
        assert agent["transcript"][0]["text"] == "My name is Ada."
        assert "resumed" in caller.page.inner_text("#session-info")

        # The resumed session has a ticket of its own; the server no longer has it.
        session_message("second", "token-2")
        bot.refuse = (1008, "no conversation 'second' to resume")
        bot.ws.close(code=1011, reason="the session's process failed")
        message = expect_error(caller, "server", "could not be resumed")
        assert "no conversation 'second' to resume" in message
        assert asked_to_resume(bot.urls[-1])["resume_token"] == "token-2"
        assert caller.agent()["transcript"][0]["text"] == "My name is Ada."  # kept to read


def test_page_shows_what_the_server_says(static_site, playwright):
    """Interim user text replaced by the final, spoken bot text, state badge, latency panel."""
    with connected_to_a_played_bot(static_site, playwright) as (caller, bot):

        def server_message(data: dict) -> None:
            bot.send(rtvi_bytes("server-message", data))

        server_message({"type": "session", "session_id": "abc123", "transport": "websocket"})
        bot.send(rtvi_bytes("user-started-speaking"))
        bot.send(
            rtvi_bytes(
                "user-transcription",
                {"text": "What is the", "final": False, "user_id": "", "timestamp": ""},
            )
        )
        caller.wait(
            """() => window.voiceAgent.transcript.some(
                 e => e.role === 'user' && !e.final && e.text === 'What is the')""",
            "the interim user text",
            10_000,
        )
        assert caller.page.locator("#transcript li.user.interim").count() == 1
        final = {
            "text": "What is the capital of France?",
            "final": True,
            "user_id": "",
            "timestamp": "",
        }
        bot.send(rtvi_bytes("user-transcription", final))
        server_message({"type": "state", "state": "thinking"})
        caller.wait("() => window.voiceAgent.state === 'thinking'", "the thinking state", 10_000)
        assert caller.page.inner_text("#state").strip().lower() == "thinking"

        server_message({"type": "state", "state": "speaking"})
        bot.send(rtvi_bytes("bot-started-speaking"))
        segment = {"segment_id": 7, "output_type": "sentence", "will_be_spoken": True}
        bot.send(
            rtvi_bytes(
                "bot-output",
                {**segment, "text": "The capital of France is Paris.", "spoken_status": "new"},
            )
        )
        bot.send(
            rtvi_bytes(
                "bot-output",
                {
                    **segment,
                    "text": "The capital of France is Paris.",
                    "spoken_status": "completed",
                    "spoken_progress": {
                        "accumulated_text": "The capital of France is Paris.",
                        "remaining_text": "",
                    },
                },
            )
        )
        bot.send(rtvi_bytes("bot-stopped-speaking"))
        server_message({"type": "state", "state": "listening"})
        record = {
            "type": "turn-metrics",
            "session_id": "abc123",
            "turn": 1,
            "user_text": final["text"],
            "bot_text": "The capital of France is Paris.",
            "interrupted": False,
            "stages_ms": {
                "vad": 200.0,
                "stt": 310.5,
                "turn": 2.0,
                "llm_ttft": 420.0,
                "tts_ttfb": 180.0,
                "voice_to_voice": 1234.5,
            },
        }
        server_message(record)
        caller.wait(
            "() => window.voiceAgent.turns.length === 1 && window.voiceAgent.state === 'listening'",
            "the turn's metrics",
            10_000,
        )

        agent = caller.agent()
        mic = agent["mic"]
        assert mic["echoCancellation"] and mic["noiseSuppression"] and mic["autoGainControl"]
        assert agent["sessionId"] == "abc123"
        assert agent["transcript"] == [
            {"role": "user", "text": "What is the capital of France?", "final": True},
            {"role": "bot", "text": "The capital of France is Paris.", "final": True},
        ]
        assert agent["turns"] == [record]
        latest = caller.page.inner_text("#latency-latest")
        assert "1.2 s" in latest and "311 ms" in latest  # voice-to-voice, STT
        assert caller.page.locator("#latency-latest .v2v dd").inner_text() == "1.2 s"
        # A stage that did not happen is shown as absent, not as 0.
        tool = caller.page.locator("#latency-latest div", has_text="Tool").locator("dd")
        assert tool.inner_text() == "—"
        assert caller.page_errors == []
