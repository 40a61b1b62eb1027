"""Real browser: `/dashboard`, given the admin token, follows a live session over SSE.

The session is driven by the Python client (web/ws_client.py) against the in-process server
— real VAD, turn detection, transport and metrics; instant fake STT/LLM/TTS, so the test is
about the dashboard, not the models' speed on a loaded machine — while Chromium (Debian's, driven
by Playwright; `playwright install` is never needed) has the dashboard open. The browser runs on a
thread of its own (Playwright's sync API), the server and the client in the test's event loop; they
hand over with events, never sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from tests.support.fakes import FakeProviders
from tests.support.screenshots import keep_screenshot
from web.ws_client import AgentClient

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TURN_TIMEOUT = 60  # seconds per turn (fake providers: a few seconds of real-time audio)
FAKE = FakeProviders()
TOKEN = "dashboard-test-token-81f0"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} missing (`make test` installs it)"),
]

# Pixels of the p50 bars of the stage chart, by colour (see STAGE_INFO in web/dashboard/state.js).
COUNT_BAR_PIXELS = """() => {
  const canvas = document.querySelector('#stage-chart');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = {vad: [96, 165, 250], stt: [52, 211, 153], voice_to_voice: [248, 250, 252]};
  const counts = Object.fromEntries(Object.keys(colours).map(k => [k, 0]));
  for (let i = 0; i < data.length; i += 4)
    for (const [k, [r, g, b]] of Object.entries(colours))
      if (data[i] === r && data[i + 1] === g && data[i + 2] === b && data[i + 3] === 255)
        counts[k]++;
  return counts;
}"""


def wait_js(page, expression: str, abort: threading.Event, timeout: float) -> None:
    """`page.wait_for_function`, in slices, giving up as soon as the test side aborts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            page.wait_for_function(expression, timeout=2_000)
            return
        except sync_api.TimeoutError:
            if abort.is_set():
                raise AssertionError(f"aborted while waiting for {expression!r}") from None
            if time.monotonic() > deadline:
                raise


async def until(
    step: asyncio.Event, browser: asyncio.Future, what: str, timeout: float = 180
) -> None:
    """Wait for the browser thread's signal; fail at once if the thread failed."""
    waiter = asyncio.ensure_future(step.wait())
    done, _ = await asyncio.wait({waiter, browser}, timeout=timeout,
                                 return_when=asyncio.FIRST_COMPLETED)
    if browser in done and not step.is_set():
        waiter.cancel()
        browser.result()  # raises the browser thread's error
        pytest.fail(f"the browser finished before {what}")
    if not done:
        waiter.cancel()
        pytest.fail(f"timed out waiting for the browser: {what}")


async def test_dashboard_follows_a_live_session(serve_app, speech, tmp_path):
    loop = asyncio.get_running_loop()
    steps = {name: asyncio.Event() for name in ("page_ready", "checked")}
    client_left = threading.Event()  # also set when the test side fails: the browser gives up
    seen: dict = {}

    def signal(name: str) -> None:
        loop.call_soon_threadsafe(steps[name].set)

    shot = tmp_path / "dashboard.png"
    async with serve_app(FAKE, admin_token=TOKEN) as server:

        def browse() -> None:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1360, "height": 1100})
                    page.goto(f"{server.url}/dashboard")
                    # The data is behind the admin token: the page says so, then takes it.
                    wait_js(page, "window.dashboard && window.dashboard.locked", client_left, 30)
                    seen["locked"] = page.locator("#stream-status").inner_text()
                    page.locator("#admin-token").fill(TOKEN)
                    page.locator("#token-form button").click()
                    wait_js(page, "window.dashboard && window.dashboard.connected", client_left, 30)
                    signal("page_ready")

                    # The live session appears with both turns, and the latency chart fills —
                    # all pushed by the server: the page is never reloaded.
                    wait_js(
                        page,
                        "() => [...window.dashboard.sessions.values()]"
                        """.some(e => !e.ended && e.history.length >= 2)
                                 && +document.querySelector('#stage-chart').dataset.samples >= 2""",
                        client_left,
                        2 * TURN_TIMEOUT,
                    )
                    session_id = page.evaluate(
                        "[...window.dashboard.sessions.values()].find(e => !e.ended).summary.id"
                    )
                    card = page.locator(f'.session[data-session-id="{session_id}"]')
                    seen.update(
                        session_id=session_id,
                        transcript=card.locator(".transcript").inner_text(),
                        state=card.locator(".pill.state").inner_text(),
                        duration=card.locator(".duration").inner_text(),
                        waterfall_bars=card.locator(".waterfall rect").count(),
                        bar_pixels=page.evaluate(COUNT_BAR_PIXELS),
                        trend_samples=page.evaluate("+document.querySelector('#trend-chart').dataset.samples"),
                        live_count=page.locator("#live-count").inner_text(),
                    )
                    page.screenshot(path=str(shot), full_page=True)

                    # The instructions form reaches PUT /api/sessions/{id}/context and shows the
                    # answer.
                    card.locator(".instructions summary").click()
                    card.locator("textarea[name=instructions]").fill("Answer in one word.")
                    card.locator("input[name=token]").fill("not-the-token")
                    card.locator("button[type=submit]").click()
                    result = card.locator(".instructions-result.error")
                    sync_api.expect(result).to_contain_text("HTTP", timeout=10_000)
                    seen["instructions_refused"] = result.inner_text()
                    # …and with the right token, the session takes them.
                    card.locator("input[name=token]").fill(TOKEN)
                    card.locator("input[name=mode][value=replace]").check()
                    card.locator("button[type=submit]").click()
                    result = card.locator(".instructions-result.ok")
                    sync_api.expect(result).to_contain_text("HTTP", timeout=10_000)
                    seen["instructions_result"] = result.inner_text()
                    signal("checked")

                    # The session ends: the page hears of it too.
                    assert client_left.wait(120), "the client never left"
                    page.wait_for_function(
                        f"window.dashboard.sessions.get('{session_id}')?.ended === true",
                        timeout=60_000,
                    )
                    seen["ended_state"] = card.locator(".pill.state").inner_text()
                finally:
                    browser.close()

        browser_thread = asyncio.ensure_future(asyncio.to_thread(browse))
        try:
            await until(steps["page_ready"], browser_thread, "the page to connect")
            async with AgentClient(server.ws_url) as client:
                answers = []
                for n, question in enumerate(("What is the capital of France?",
                                              "What is the capital of Japan?")):
                    await client.speak(speech(question))
                    assert await client.silence_until(
                        lambda r: len(r.turns) > n, TURN_TIMEOUT), client.received.turns
                    answers.append(client.received.turns[n])
                session_id = client.received.server_messages("session")[0]["session_id"]
                await until(steps["checked"], browser_thread, "the dashboard to show the turns",
                            120)
            client_left.set()
            await browser_thread
        finally:
            client_left.set()
            await asyncio.gather(browser_thread, return_exceptions=True)

    assert seen["locked"] == "admin token required"
    assert seen["session_id"] == session_id and seen["live_count"] == "1"
    for turn in answers:
        assert (turn["bot_text"] and turn["user_text"] in seen["transcript"]
                and turn["bot_text"] in seen["transcript"])
    assert seen["state"] in {"listening", "thinking", "speaking"}
    assert seen["duration"].count(":") == 1
    assert seen["waterfall_bars"] >= 2 * 5, "each turn drawn as its stages"
    bars = seen["bar_pixels"]  # every stage drawn, the longest one widest
    assert (all(n > 0 for n in bars.values())
            and bars["voice_to_voice"] > max(200, bars["stt"])), bars
    assert seen["trend_samples"] == 2
    assert seen["instructions_refused"].startswith("HTTP 401"), seen["instructions_refused"]
    assert seen["instructions_result"].startswith("HTTP 200"), seen["instructions_result"]
    assert '"instructions":"Answer in one word."' in seen["instructions_result"]
    assert seen["ended_state"] == "ended"
    assert shot.stat().st_size > 10_000
    keep_screenshot(shot)
