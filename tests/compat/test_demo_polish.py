"""The demo page's polish, in headless Chromium: configured models first and the others folded
under a disclosure, labels without doubled brackets, a favicon, the word-time tooltip above the
word, a legend, the placeholder back after a failed start."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser

from tests.e2e.test_demo_page import ARTIFACTS, browser, next_event, open_page, speech_wav
from tests.servers import Gateway

__all__ = ["browser", "speech_wav"]  # the fixtures, shared with the demo page test


async def test_model_list_labels_favicon_legend_and_placeholder(browser: Browser,
                                                                gateway: Gateway) -> None:
    page, events = await open_page(browser, gateway)
    options = await page.eval_on_selector_all(
        "#model option", "os => os.map(o => [o.value, o.textContent, o.disabled])")
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        models = (await http.get("/v1/models")).json()["models"]
        icon = await page.get_attribute("link[rel=icon]", "href")
        assert icon and (await http.get(icon)).status_code == 200
    available = {m["id"] for m in models if m["available"]}
    assert {value for value, _, _ in options} == available  # no disabled rows
    assert not any(disabled for _, _, disabled in options)
    labels = [label for _, label, _ in options]
    assert all(label.count("(") <= 1 for label in labels), labels
    folded = await page.eval_on_selector_all("#unconfigured li", "ls => ls.map(l => l.title)")
    assert len(folded) == len(models) - len(available) > 0
    reasons = {m["id"]: m.get("unavailable_reason") for m in models if not m["available"]}
    assert sorted(folded) == sorted(r or "" for r in reasons.values())  # each with its reason
    assert "deepgram is not configured: set DEEPGRAM_API_KEY" in folded
    assert await page.locator("#unconfigured").get_attribute("open") is None  # folded
    summary = await page.inner_text("#unconfigured summary")
    assert f"{len(folded)} more models" in summary and "deepgram" in summary

    assert "low confidence" in await page.inner_text(".legend")
    bottom = await page.evaluate("""() => {
        const s = [...document.styleSheets].flatMap(x => [...x.cssRules])
          .find(r => r.selectorText === '.word:hover::after');
        return s.style.bottom; }""")
    assert bottom == "100%"  # the tooltip sits above its word

    await page.fill("#key", "sg_not_a_real_key")
    await page.uncheck("#use-token")
    await page.click("#start")
    event = await next_event(events, 30)
    assert event["name"] == "closed" and event["detail"]["code"] == 4401
    assert await page.locator("#transcript .placeholder").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.click("#unconfigured summary")
    await page.screenshot(path=str(ARTIFACTS / "demo_page_models.png"), full_page=True)
    await page.context.close()
