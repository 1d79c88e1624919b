"""The audience page in a real browser: Debian's headless Chromium driven by Playwright.

Type part of a name, pick a suggestion, ask, see it queued; what a visitor typed is shown as text,
never run as HTML. With DREAM_SHOTS=DIR the phone-sized screenshot is also saved there (the
README's docs/audience_page.png came from `DREAM_SHOTS=docs pytest tests/control/test_audience_page.py`).
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from realtime.control.audience import AudienceQueue
from realtime.control.audience_web import AudienceServer
from realtime.control.params import LiveParams
from realtime.knobs import AudienceConfig
from tests._require import require

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright is never let download a browser
PHONE = {"width": 390, "height": 844}  # CSS pixels of a common phone


@pytest.fixture
def browser():
    require(Path(CHROMIUM).exists(), "chromium not installed (scripts/install-system-deps.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _expect():
    from playwright.sync_api import expect

    return expect


@pytest.fixture
def server():
    params = LiveParams(["a", "b"], ["m"], "m", {"glide": 0.1})
    queue = AudienceQueue(AudienceConfig(per_client=0.0, dwell=60.0), params)
    srv = AudienceServer(queue, "127.0.0.1", 0)
    srv.start()
    queue.ask("10.0.0.1", "volcano")  # someone asked before: it is dreamed now
    queue.ask("10.0.0.2", "pizza")
    yield srv
    srv.stop()


def test_type_pick_a_suggestion_ask_and_see_it_queued(browser, server, tmp_path):
    page = browser.new_page(viewport=PHONE)
    page.goto(server.url)
    expect = _expect()
    # (The page's CSP forbids eval, so waits are Playwright's locators, not wait_for_function.)
    expect(page.locator("#now")).to_have_text(re.compile(r"^volcano \(asked \d+ s ago\)$"))
    page.locator("#name").press_sequentially("spider w", delay=20)
    pick = page.locator("#suggestions button", has_text="spider web")
    pick.wait_for(timeout=5000)
    shots = [tmp_path / "audience_suggestions.png", tmp_path / "audience_page.png"]
    page.screenshot(path=str(shots[0]), clip={"x": 0, "y": 0, "width": 390, "height": 420})
    pick.click()
    assert page.locator("#name").input_value() == "spider web"
    page.locator("#send").click()
    expect(page.locator("#message")).to_have_text(re.compile("^Queued: spider web"))
    assert page.locator("#queue li").all_text_contents() == ["pizza", "spider web"]
    assert server.queue.view()["queue"] == ["pizza", "spider web"]
    page.screenshot(path=str(shots[1]), clip={"x": 0, "y": 0, "width": 390, "height": 520})
    for shot in shots:
        assert shot.stat().st_size > 5000
        if os.environ.get("DREAM_SHOTS"):
            shutil.copy(shot, Path(os.environ["DREAM_SHOTS"]) / shot.name)


def test_what_a_visitor_types_is_shown_as_text_and_a_refusal_suggests(browser, server):
    page = browser.new_page(viewport=PHONE)
    page.goto(server.url)
    evil = "<img src=x onerror=\"document.title='owned'\">"
    page.locator("#name").fill(evil)
    page.locator("#send").click()
    message = page.locator("#message")
    _expect()(message).to_have_text(re.compile("unknown"))
    assert "unknown ImageNet class" in message.text_content()
    assert "<img" in message.text_content()  # shown as the characters typed...
    assert page.locator("img").count() == 0 and page.title() == "Ask the dream"  # ...never run
    page.locator("#name").fill("spaceship")
    page.locator("#send").click()
    page.locator("#suggestions button", has_text="space shuttle").wait_for(timeout=5000)
