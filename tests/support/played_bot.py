"""A server played by the test for the web client: the built page as static files, and a
`/ws` that Playwright answers frame by frame (tests/test_browser_client.py,
tests/test_browser_errors.py)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

from tests.support.browser import Caller


class StaticSite:
    """The built client as plain static files: no models, no sessions."""

    def __init__(self, root: Path):
        handler = functools.partial(QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def tail(self) -> str:
        return "(static site: no server log)"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def static_site(client_bundle):
    site = StaticSite(client_bundle.parent)
    yield site
    site.stop()


def healthy(page) -> None:
    page.route("**/api/health", lambda route: route.fulfill(json={"status": "ok", "sessions": 0}))


def frame_bytes(**fields) -> bytes:
    """A Pipecat protobuf frame, e.g. frame_bytes(message={"data": "..."})."""
    from pipecat.frames.protobufs import frames_pb2

    frame = frames_pb2.Frame()
    for kind, values in fields.items():
        getattr(frame, kind).SetInParent()
        for name, value in values.items():
            setattr(getattr(frame, kind), name, value)
    return frame.SerializeToString()


def rtvi_bytes(type_: str, data: dict | None = None, id_: str = "test") -> bytes:
    message = {"label": "rtvi-ai", "type": type_, "id": id_, "data": data or {}}
    return frame_bytes(message={"data": json.dumps(message)})


def tone_frames(seconds: float, rate: int = 24000, frame_ms: int = 40) -> list[bytes]:
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    step = rate * frame_ms // 1000
    return [
        frame_bytes(
            audio={"audio": pcm[i : i + step].tobytes(), "sample_rate": rate, "num_channels": 1}
        )
        for i in range(0, len(pcm), step)
    ]


class FakeBotSocket:
    """Plays the server's `/ws` for one page: bot-ready on client-ready, or a refusal of the
    next socket the page opens (`refuse`). `urls`: every socket's URL, in order."""

    def __init__(self, page, refuse: tuple[int, str] | None = None):
        self.ws = None
        self.refuse = refuse
        self.urls: list[str] = []
        page.route_web_socket("**/ws*", self._accept)

    def _accept(self, ws) -> None:
        self.ws = ws
        self.urls.append(ws.url)
        refuse, self.refuse = self.refuse, None
        ws.on_message(lambda message: self._on_message(ws, message, refuse))

    def _on_message(self, ws, message, refuse: tuple[int, str] | None) -> None:
        from pipecat.frames.protobufs import frames_pb2

        if refuse:
            # Like the server: the socket is open (the page spoke), then closed with a reason.
            ws.close(code=refuse[0], reason=refuse[1])
            return
        if not isinstance(message, bytes):
            return
        frame = frames_pb2.Frame.FromString(message)
        if frame.WhichOneof("frame") == "message":
            rtvi = json.loads(frame.message.data)
            if rtvi.get("type") == "client-ready":
                ws.send(rtvi_bytes("bot-ready", {"version": "2.2.0"}, rtvi.get("id", "ready")))

    def send(self, data: bytes) -> None:
        assert self.ws is not None, "the page has not opened the WebSocket"
        self.ws.send(data)


@contextlib.contextmanager
def connected_to_a_played_bot(site, playwright):
    """A page connected over WebSocket to a bot the test plays (`FakeBotSocket`):
    (caller, bot), the browser closed after."""
    caller = Caller(playwright, site, None, "websocket")
    try:
        healthy(caller.page)
        bot = FakeBotSocket(caller.page)
        caller.connect()
        caller.wait_connected()
        yield caller, bot
    finally:
        caller.close()
