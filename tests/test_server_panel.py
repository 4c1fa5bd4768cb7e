"""The web panel in real headless Chromium (Debian's chromium driven by playwright) against `polyfuse serve`
fusing on the two bundled local models, with one member that cannot be reached."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from browser import ARGS, CHROMIUM
from serverkit import ServeProcess

UNREACHABLE = "http://127.0.0.1:9/v1#x"
CONFIG = f"""
default_preset = "panel"

[presets.panel]
pool = ["local/smollm2-135m", "local/gemma3-270m", "{UNREACHABLE}"]
judge = "local/smollm2-135m"
mode = "merge"
max_tokens = 24
judge_max_tokens = 160
member_timeout = 120

[providers.demo]
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-demo-SECRET-9999"
"""

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServeProcess(tmp_path_factory.mktemp("panel"), CONFIG) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def open_panel(browser, server, width: int, height: int) -> Page:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server.url + "/")
    expect(page.locator("#preset option")).not_to_have_count(0)
    return page


def test_pickers_are_filled_from_the_config(browser, server):
    page = open_panel(browser, server, 1280, 800)
    assert page.locator("#preset").input_value() == "panel"
    assert page.locator("#mode").input_value() == "merge"
    assert page.locator("#judge").input_value() == "local/smollm2-135m"
    assert set(page.locator("#mode option").all_inner_texts()) == {"best-of", "merge", "debate", "vote"}
    checked = page.locator("#pool input:checked").evaluate_all("boxes => boxes.map(b => b.value)")
    assert set(checked) == {"local/smollm2-135m", "local/gemma3-270m", UNREACHABLE}
    assert "sk-demo-SECRET-9999" not in page.content()
    page.close()


def test_a_fusion_fills_columns_verdict_and_answer_live(browser, server, tmp_path):
    page = open_panel(browser, server, 1280, 800)
    page.fill("#prompt", "What is the capital of France?")
    page.click("#run")
    columns = page.locator(".member")
    expect(columns).to_have_count(3, timeout=30_000)
    failed = page.locator(f'.member[data-member="{UNREACHABLE}"]')
    expect(failed).to_have_class("member failed", timeout=60_000)
    expect(failed.locator(".reason")).to_contain_text("Cannot connect", timeout=5_000)
    expect(page.locator("#status")).to_have_text("done", timeout=240_000)
    for member in ("local/smollm2-135m", "local/gemma3-270m"):
        col = page.locator(f'.member[data-member="{member}"]')
        expect(col.locator(".state")).to_contain_text("ok")
        assert col.locator(".text").inner_text().strip()
        assert "tokens" in col.locator(".stats").inner_text() and " s " in col.locator(".stats").inner_text()
    expect(page.locator("#verdict")).to_be_visible()
    assert "agreement" in page.locator("#agreement-text").inner_text()
    assert page.locator("#agreement-fill").evaluate("e => e.style.width").endswith("%")
    assert page.locator("#answer").inner_text().strip()
    assert "tokens" in page.locator("#totals").inner_text()
    page.screenshot(path=str(tmp_path / "laptop.png"), full_page=True)
    # a phone: one column, nothing wider than the screen
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    boxes = [columns.nth(i).bounding_box() for i in range(3)]
    assert len({round(b["x"]) for b in boxes if b}) == 1  # stacked, not side by side
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    page.close()


def test_answer_streams_before_the_run_ends(browser, server):
    page = open_panel(browser, server, 1280, 800)
    page.fill("#prompt", "Write two sentences about the sea.")  # an answer of several words, streamed
    page.fill("#max-tokens", "16")
    # Record the answer and the run's status at every change of either: an answer seen while the status is not
    # yet "done" reached the page before the run ended (however few words it has: the 135M writer may say "no").
    page.evaluate(
        """() => { window.answerStates = [];
        const record = () => window.answerStates.push([document.getElementById('answer').textContent,
                                                        document.getElementById('status').textContent]);
        for (const id of ['answer', 'status'])
          new MutationObserver(record).observe(document.getElementById(id),
                                               {childList: true, characterData: true, subtree: true}); }"""
    )
    page.click("#run")
    expect(page.locator("#status")).to_have_text("done", timeout=240_000)
    states = page.evaluate("window.answerStates")
    early = [answer for answer, status in states if answer.strip() and status != "done"]
    if not early:  # only when the judge's writing failed: the vote's answer then comes whole, with the end
        expect(page.locator("#agreement-text")).to_contain_text("fell back to the vote", timeout=1_000)
    assert page.locator("#answer").inner_text().strip(), states
    page.close()


def test_the_structured_analysis_and_the_judges_method_reach_the_panel(browser, server):
    """A real local judge (SmolLM2 under the analysis grammar) writes the analysis; the panel shows it."""
    page = open_panel(browser, server, 1280, 800)
    page.fill("#prompt", "Name a colour of the sky.")
    page.fill("#max-tokens", "12")
    page.select_option("#mode", "best-of")
    page.check("#analysis")
    page.click("#run")
    expect(page.locator("#status")).to_have_text("done", timeout=240_000)
    expect(page.locator("#analysis-view")).to_be_visible()
    for section in ("#consensus", "#analysis-coverage", "#analysis-insights", "#analysis-blind-spots"):
        assert page.locator(f"{section} li").count() >= 1  # items, or the "—" placeholder
    method = page.locator("#verdict-method").inner_text()
    assert "chosen by" in method and "confidence" in method  # the local judge reads token probabilities
    page.close()
