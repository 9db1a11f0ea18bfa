"""The live-suggestion page in a real browser: the system Chromium driven by Playwright (never a browser download)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from pipeline.bench import free_port
from pipeline.config import ServeConfig
from pipeline.serving.app import _load, create_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the system Chromium (/usr/bin/chromium): "
                                 "apt-get install -y chromium fonts-lohit-deva")]


@pytest.fixture(scope="module")
def server(trained_checkpoint):
    import uvicorn

    bundle, info = _load(str(trained_checkpoint))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(bundle, ServeConfig(), info), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        pytest.fail("the server did not answer /health within 30 s")
    yield url
    srv.should_exit = True
    thread.join(10)


def test_typing_shows_suggestions_and_clicking_appends(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 560})
            page.goto(server)
            box = page.locator("#text")
            box.press_sequentially("मी उद्या ", delay=30)
            first = page.locator("#suggestions button.suggestion").first
            expect(first).to_be_visible(timeout=10_000)
            assert page.locator("#suggestions button.suggestion").count() == 5
            assert "%" in first.inner_text()
            word = first.get_attribute("data-word")
            assert word
            page.screenshot(path=str(tmp_path / "suggestions.png"))
            first.click()
            expect(box).to_have_value(f"मी उद्या {word} ")
            # the new context gets its own suggestions
            expect(page.locator("#suggestions button.suggestion").first).to_be_visible(timeout=10_000)
            shot = tmp_path / "after_click.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 5_000
            print(f"screenshots: {tmp_path / 'suggestions.png'} {shot}")
        finally:
            browser.close()
