"""The web client's errors in Debian's Chromium, against a server played by the test: a
refused session (WebSocket, WebRTC), an unreachable server, a denied microphone. Each is
shown on the page with why, and the page can connect again."""

from __future__ import annotations

import pytest

from tests.support.browser import Caller, expect_error, needs_chromium
from tests.support.played_bot import FakeBotSocket, healthy

pytestmark = needs_chromium


def test_refused_websocket_session(static_site, playwright):
    """The server is full: it accepts the socket and closes it with 1013 and a reason."""
    caller = Caller(playwright, static_site, None, "websocket")
    try:
        healthy(caller.page)
        FakeBotSocket(caller.page, refuse=(1013, "The server is at its limit of 8 live sessions"))
        caller.connect()
        message = expect_error(caller, "refused", "refused")
        assert "limit of 8 live sessions" in message
    finally:
        caller.close()


def test_refused_webrtc_session(static_site, playwright):
    """The server is full: /api/offer answers 503 with a detail."""
    caller = Caller(playwright, static_site, None, "webrtc")
    try:
        healthy(caller.page)
        caller.page.route(
            "**/api/offer",
            lambda route: route.fulfill(
                status=503, json={"detail": "The server is at its limit of 8 live sessions"}
            ),
        )
        caller.connect()
        message = expect_error(caller, "refused", "refused", timeout=60_000)
        assert "limit of 8 live sessions" in message
    finally:
        caller.close()


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
def test_unreachable_server(static_site, playwright, transport):
    caller = Caller(playwright, static_site, None, transport)
    try:
        caller.page.route("**/api/health", lambda route: route.abort("connectionrefused"))
        caller.connect()
        expect_error(caller, "unreachable", "unreachable")
    finally:
        caller.close()


def test_microphone_denied(static_site, playwright):
    """No fake permission UI: headless Chromium refuses the mic (NotAllowedError)."""
    caller = Caller(playwright, static_site, None, "websocket", allow_mic=False)
    try:
        healthy(caller.page)
        caller.connect()
        expect_error(caller, "mic-denied", "microphone access was denied")
    finally:
        caller.close()
