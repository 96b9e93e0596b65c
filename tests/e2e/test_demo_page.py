"""The demo page in headless Chromium, with a WAV of real speech as the fake microphone.

Chromium (Debian's /usr/bin/chromium, never a downloaded one) plays the file through
``--use-file-for-fake-audio-capture`` in a loop; the page captures it with its AudioWorklet,
streams 16 kHz PCM to ``/v1/transcribe`` and shows partials and finals. A screenshot is saved
under ``tests/artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from app.audio import wav_bytes
from tests.servers import Gateway
from tests.speech import BECKETT_TEXT, normalize, pcm, wer

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
MAX_WER = 0.25


def ensure_chromium() -> str:
    """Install Debian's chromium when it is missing (never a playwright-downloaded browser)."""
    if not os.path.exists(CHROMIUM):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, timeout=600, env=env)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "chromium"], check=True,
                       timeout=900, env=env, stdout=subprocess.DEVNULL)
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is still missing after apt-get install chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Beckett at 48 kHz with silence around it (Chromium loops the file)."""
    rate = 48000
    silence = bytes(2 * rate)
    path = tmp_path_factory.mktemp("fake-mic") / "beckett.wav"
    path.write_bytes(wav_bytes(silence + pcm("beckett.wav", rate) + silence * 3, rate))
    return path


@pytest.fixture(scope="module")
async def browser(speech_wav: Path) -> AsyncIterator[Browser]:
    executable = ensure_chromium()
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True,
            args=["--no-sandbox", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={speech_wav}",
                  "--autoplay-policy=no-user-gesture-required",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-gpu"])
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Browser, gateway: Gateway) -> tuple[Page, asyncio.Queue[Any]]:
    """The demo page, with every speechgate:* DOM event forwarded to a queue."""
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    events: asyncio.Queue[Any] = asyncio.Queue()
    await page.expose_function("__speechgateEvent", events.put_nowait)
    await page.add_init_script("""
        for (const name of ["final", "partial", "closed"]) {
          document.addEventListener("speechgate:" + name,
            (e) => window.__speechgateEvent({name, detail: e.detail}));
        }""")
    page.on("pageerror", lambda exc: events.put_nowait({"name": "pageerror",
                                                        "detail": str(exc)}))
    await page.goto(f"{gateway.http_url}/")
    await page.wait_for_selector("#model option[value='local.tiny.en']", state="attached")
    return page, events


async def next_event(events: asyncio.Queue[Any], wait: float = 60) -> dict[str, Any]:
    event: dict[str, Any] = await asyncio.wait_for(events.get(), wait)
    assert event["name"] != "pageerror", event["detail"]
    return event


async def test_microphone_speech_becomes_final_transcripts(browser: Browser,
                                                           gateway: Gateway) -> None:
    page, events = await open_page(browser, gateway)
    await page.fill("#key", gateway.dev_key)
    await page.select_option("#model", "local.tiny.en")
    await page.click("#start")
    finals: list[str] = []
    partials = 0
    async with asyncio.timeout(90):
        while "better" not in normalize(" ".join(finals)):
            event = await next_event(events)
            assert event["name"] != "closed", event
            if event["name"] == "partial":
                partials += 1
                if partials == 1:  # a partial on screen, with the level meter moving
                    ARTIFACTS.mkdir(exist_ok=True)
                    await page.screenshot(path=str(ARTIFACTS / "demo_page_partial.png"))
            else:
                finals.append(event["detail"]["text"])
    await page.hover("#transcript .final .word")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "demo_page.png"), full_page=True)
    await page.click("#stop")
    while (event := await next_event(events, 30))["name"] != "closed":
        pass
    assert event["detail"]["code"] == 1000
    await page.wait_for_selector("#state.closed")

    words = normalize(" ".join(finals))
    spoken = " ".join(words[:words.index("better") + 1])  # the file loops: one pass of it
    assert wer(BECKETT_TEXT, spoken) <= MAX_WER, finals
    assert partials > 0  # partials were shown while speaking
    shown = await page.inner_text("#transcript")
    assert "Ever tried" in shown or "ever tried" in shown.lower()
    tip = await page.get_attribute("#transcript .final .word", "data-tip")
    assert tip is not None and " s" in tip and "–" in tip  # word times on hover
    assert await page.locator("#errors .error").count() == 0
    await page.context.close()


async def test_bad_key_shows_close_code_and_reason(browser: Browser, gateway: Gateway) -> None:
    page, events = await open_page(browser, gateway)
    await page.fill("#key", "sg_not_a_real_key")
    await page.uncheck("#use-token")  # straight to the WebSocket: the auth message is refused
    await page.click("#start")
    event = await next_event(events, 30)
    assert event == {"name": "closed", "detail": {"code": 4401, "reason": "invalid API key"}}
    error = await page.inner_text("#errors .error")
    assert "4401" in error and "invalid API key" in error
    assert "4401" in await page.inner_text("#state")
    await page.check("#use-token")  # the token endpoint refuses the same key with 401
    await page.click("#start")
    await page.wait_for_selector("#errors .error code:text('401')")
    await page.context.close()
