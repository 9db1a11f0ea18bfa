"""The live-suggestion page in a real browser: the system Chromium driven by Playwright (never a browser download)."""
from __future__ import annotations

import threading
import time
import unicodedata
from pathlib import Path

import httpx
import pytest

from pipeline.bench import free_port
from pipeline.config import ServeConfig
from pipeline.serving.app import _load, create_app
from pipeline.serving.explain import Explainer
from pipeline.serving.mixed import load_for

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots, kept after the run (git-ignored)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the system Chromium (/usr/bin/chromium): "
                                 "apt-get install -y chromium fonts-lohit-deva")]


@pytest.fixture(scope="module")
def server(mixed_checkpoint, tiny_rnn_checkpoint):
    """The page as `make serve` gives it: the LSTM with its mixture, and the RNN and LSTM side by side."""
    import uvicorn

    cfg = ServeConfig()
    bundle, info = _load(str(mixed_checkpoint))
    explainers = [Explainer(b, f"{b.model_args['cell']}-tiny/1", cfg.max_context_pieces, cfg.explain_threshold)
                  for b in (_load(str(tiny_rnn_checkpoint))[0], bundle)]
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(bundle, cfg, info, load_for(bundle), explainers),
                                        host="127.0.0.1", port=port, log_level="warning"))
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


def test_typing_shows_suggestions_and_clicking_appends(server):
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
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "suggestions.png"))
            first.click()
            expect(box).to_have_value(f"मी उद्या {word} ")
            # the new context gets its own suggestions
            expect(page.locator("#suggestions button.suggestion").first).to_be_visible(timeout=10_000)
            expect(page.locator("#model")).to_contain_text("+ 4-gram + cache")  # the mixture is the default
            shot = ARTIFACTS / "after_click.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 5_000
            print(f"screenshots: {ARTIFACTS / 'suggestions.png'} {shot}")
        finally:
            browser.close()


# the subject (सुमित्रा) sits 25 words before the end
LONG = ("सुमित्रा काल सकाळी लवकर उठली आणि तिने घरातील सगळी कामे पटापट आवरली , मग ती बाजारात गेली , तिथे तिला "
        "तिची जुनी मैत्रीण भेटली आणि दोघी")


def test_side_by_side_columns_shade_the_typed_words(server):
    from playwright.sync_api import expect, sync_playwright

    assert len(LONG.split()) >= 21
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(server)
            page.locator("#text").fill(LONG)
            page.locator("#text").press("End")
            page.locator("#text").type(" ")
            cols = page.locator("#columns .column")
            expect(cols).to_have_count(2, timeout=15_000)
            assert [cols.nth(i).get_attribute("data-cell") for i in range(2)] == ["rnn_tanh", "lstm"]
            for i in range(2):
                col = cols.nth(i)
                expect(col.locator("h3")).to_contain_text("-tiny/1")  # labelled with its version
                words = col.locator(".typed span.word")
                expect(words).to_have_count(len(LONG.split()))
                shades = [float(words.nth(j).get_attribute("data-influence")) for j in range(words.count())]
                assert max(shades) == 1.0 and min(shades) < 1.0  # shaded by influence, not uniformly
                styles = {words.nth(j).evaluate("e => getComputedStyle(e).backgroundColor") for j in range(3)}
                assert all(st.startswith("rgba(180, 70, 31") for st in styles)
                expect(col.locator(".reach")).to_contain_text("looks back")
                assert col.locator("button.suggestion").count() == 5
            # Devanagari is drawn with a real font: distinct glyphs have distinct widths (tofu boxes would not)
            widths = page.evaluate("""() => { const c = document.createElement('canvas').getContext('2d');
                c.font = '20px "Noto Sans Devanagari", "Lohit Devanagari", sans-serif';
                return ['क', 'ि', 'ळ', 'ञ्ज', 'श्री'].map(t => c.measureText(t).width); }""")
            assert len(set(widths)) >= 4, widths
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "side_by_side.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            # clicking a column's suggestion appends it, as in the main list
            word = cols.nth(1).locator("button.suggestion").first.get_attribute("data-word")
            cols.nth(1).locator("button.suggestion").first.click()
            expect(page.locator("#text")).to_have_value(f"{LONG} {word} ")
            # half a word typed: each column completes it, and a click replaces the typed prefix
            page.locator("#text").type("सं")
            expect(cols.nth(1)).to_have_attribute("data-completing", "सं", timeout=15_000)
            done = cols.nth(1).locator("button.suggestion").first.get_attribute("data-word")
            assert done.startswith("सं")
            cols.nth(1).locator("button.suggestion").first.click()
            expect(page.locator("#text")).to_have_value(f"{LONG} {word} {done} ")
            print(f"screenshot: {shot}")
        finally:
            browser.close()


def test_typing_inside_a_word_completes_it_and_counts_the_keystrokes_saved(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(server)
            box, mode, savings = page.locator("#text"), page.locator("#bar-mode"), page.locator("#savings")
            bar = page.locator("#suggestions button.suggestion")
            box.press_sequentially("आज ", delay=30)
            expect(mode).to_have_text("next word", timeout=10_000)
            nexts = [bar.nth(i).get_attribute("data-word") for i in range(bar.count())]
            # a prefix the model surely completes, whatever the model: the first letter of a next word it suggests
            prefix = next((w[0] for w in nexts if len(w) >= 2), None)
            assert prefix, f"no next word of two or more code points to take a prefix from: {nexts}"
            box.press_sequentially(prefix, delay=30)
            expect(mode).to_have_text(f"completing «{prefix}»", timeout=10_000)
            expect(mode).to_have_attribute("data-completing", prefix)
            shown = [bar.nth(i).get_attribute("data-word") for i in range(bar.count())]
            assert shown and all(unicodedata.normalize("NFC", w).startswith(prefix) for w in shown), (prefix, shown)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "completing.png"))
            i = next((j for j, w in enumerate(shown) if len(w) > len(prefix)), 0)  # one that saves keystrokes
            bar.nth(i).click()
            expect(box).to_have_value(f"आज {shown[i]} ")  # the prefix gave way to the word, and a space follows
            expect(box).to_be_focused()
            # typed: आ ज ␣ (3), the prefix (1) and the tap (1); the tap inserted the rest of the word and the space
            saved = len(shown[i]) - len(prefix)
            assert saved > 0
            expect(savings).to_have_text(f"keystrokes saved: {saved} of {5 + saved} "
                                         f"({100 * saved / (5 + saved):.1f} %)")
            assert int(savings.get_attribute("data-saved")) == saved
            assert "KSR" in savings.get_attribute("title")
            expect(mode).to_have_text("next word", timeout=10_000)  # after the tap: the next word again
            # a deletion is one keystroke; typing is counted in code points
            box.press("Backspace")
            expect(savings).to_have_text(f"keystrokes saved: {saved} of {6 + saved} "
                                         f"({100 * saved / (6 + saved):.1f} %)")
            expect(mode).to_have_text(f"completing «{shown[i]}»", timeout=10_000)
        finally:
            browser.close()


def test_only_the_latest_answer_is_shown_and_errors_are_the_servers(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            # the answer for "आज" (completing it) is held back until after the answer for "आज " (the next word)
            page.add_init_script("""(() => { const real = window.fetch;
                window.fetch = async (url, opts) => {
                  if (String(url).endsWith("predict") && JSON.parse(opts.body).text === "आज") {
                    const r = await real(url, Object.assign({}, opts, { signal: undefined }));
                    await new Promise(done => setTimeout(done, 1500));
                    window.lateAnswered = true;
                    return r;
                  }
                  return real(url, opts);
                }; })()""")
            page.goto(server)
            box, mode, status = page.locator("#text"), page.locator("#bar-mode"), page.locator("#status")
            box.press_sequentially("आज ", delay=30)
            expect(mode).to_have_text("next word", timeout=10_000)
            words = page.locator("#suggestions button.suggestion").all_inner_texts()
            page.wait_for_function("window.lateAnswered === true", timeout=10_000)
            page.wait_for_timeout(200)
            expect(mode).to_have_text("next word")  # the late answer was dropped
            assert page.locator("#suggestions button.suggestion").all_inner_texts() == words
            # a word longer than any the server completes: its 422 message is shown as it is
            box.fill("आज " + "क" * 41)
            expect(status).to_contain_text("serve.max_word_chars", timeout=10_000)
            expect(status).to_have_class("error")
            assert page.locator("#suggestions button.suggestion").count() == 0
            box.press("End")
            box.press_sequentially(" ", delay=30)
            expect(mode).to_have_text("next word", timeout=10_000)
            expect(status).not_to_have_class("error")
        finally:
            browser.close()
