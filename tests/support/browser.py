"""Driving Debian's Chromium with Playwright: the built client, a caller with a fake microphone.

Chromium is Debian's (`make test` installs the `chromium` package); Playwright only drives
it (`playwright install` is never needed). The page's `window.voiceAgent`
(web/client/src/page.ts) is what the tests read; they wait on it, never sleep.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CONNECT_TIMEOUT_MS = 60_000
TURN_TIMEOUT_MS = 240_000  # STT + LLM + TTS on two shared cores, maybe two sessions at once

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (`make test` installs it)"
)


def chromium_args(wav: Path | None = None, allow_mic: bool = True) -> list[str]:
    """Fake media devices; `wav` is what the microphone hears (a beep without one)."""
    args = ["--use-fake-device-for-media-stream"]
    if allow_mic:
        args.append("--use-fake-ui-for-media-stream")  # grants the mic without a prompt
    if wav:
        # `%noloop` (supported by Debian's Chromium 156) plays the file once instead of looping.
        args.append(f"--use-file-for-fake-audio-capture={wav}%noloop")
    return args + [
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-sync",
    ]


@pytest.fixture(scope="session")
def client_bundle() -> Path:
    """The built client (a no-op when web/static/dist is up to date)."""
    result = subprocess.run(
        ["make", "-s", "client"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"`make client` failed:\n{result.stdout}\n{result.stderr}")
    bundle = ROOT / "web" / "static" / "dist" / "index.html"
    assert bundle.exists()
    return bundle


# Module scope, not session: Playwright's sync API keeps an event loop running on this
# thread while it is open, and every async test after this module needs that thread free.
@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


class Caller:
    """One browser (its own fake microphone) with the page, talking over one transport."""

    def __init__(
        self, playwright, server, wav: Path | None, transport: str, allow_mic: bool = True
    ):
        self.server = server
        self.transport = transport
        self.browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(wav, allow_mic)
        )
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 800})
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )

    def agent(self) -> dict:
        return self.page.evaluate("() => JSON.parse(JSON.stringify(window.voiceAgent))")

    def wait(self, expression: str, what: str, timeout: int = TURN_TIMEOUT_MS) -> None:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(expression, timeout=timeout, polling=250)
        except PlaywrightTimeout:
            pytest.fail(
                f"[{self.transport}] timed out waiting for {what}\n"
                f"voiceAgent: {json.dumps(self.agent(), indent=1)[:3000]}\n"
                f"page errors: {self.page_errors}\nconsole errors: {self.console_errors[-10:]}\n"
                f"server log:\n{self.server.tail()}"
            )

    def connect(self) -> None:
        self.page.goto(self.server.url)
        self.page.select_option("#transport", self.transport)
        self.page.click("#connect")

    def wait_connected(self) -> None:
        self.wait(
            "() => window.voiceAgent.connected", "the session to be ready", CONNECT_TIMEOUT_MS
        )

    def wait_for_answer(self, country: str) -> None:
        """The question heard, the answer played, and its turn's latency reported."""
        # All the user's words so far: a slow turn detector may split the question in two.
        self.wait(
            f"""() => {{
                 const said = window.voiceAgent.transcript
                   .filter(e => e.role === 'user' && e.final).map(e => e.text).join(' ');
                 return /capital/i.test(said) && /{country}/i.test(said);
               }}""",
            f"the user transcript of the {country} question",
        )
        self.wait(
            """() => window.voiceAgent.stats.playedAudioMs > 500 && window.voiceAgent.turns.some(
                 t => typeof t.stages_ms.voice_to_voice === 'number' && t.bot_text)""",
            "a turn with a voice-to-voice figure and bot audio played",
        )
        self.wait("() => window.voiceAgent.state === 'listening'", "the bot to finish speaking")

    def disconnect(self) -> None:
        self.page.click("#disconnect")
        self.wait(
            "() => !window.voiceAgent.connected && window.voiceAgent.state === 'disconnected'",
            "the page to disconnect",
            CONNECT_TIMEOUT_MS,
        )

    def close(self) -> None:
        self.browser.close()


def expect_error(caller: Caller, kind: str, text: str, timeout: int = 30_000) -> str:
    caller.wait(
        f"() => window.voiceAgent.errors.some(e => e.kind === '{kind}')",
        f"a '{kind}' error",
        timeout,
    )
    caller.wait("() => window.voiceAgent.state === 'disconnected'", "the page to give up", timeout)
    message = caller.page.inner_text("#error")
    assert caller.page.locator("#error").is_visible()
    assert text.lower() in message.lower(), message
    assert caller.page.locator("#connect").is_enabled()
    assert not caller.agent()["connected"]
    return message
