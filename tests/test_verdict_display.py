"""What users are shown of a verdict: a judge that writes an incoherent verdict (its choice contradicts its
scores, each reason describes the other answer) is repaired before anyone sees it, in the result, the CLI
report and the web panel (real headless Chromium against the real server app on loopback); the structured
analysis and a probability judge's method and confidence reach the panel too."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from polyfuse import FusionRequest, fuse
from polyfuse.cli.render import report
from polyfuse.config import load_config
from polyfuse.server.app import create_app
from polyfuse.testing import Reply, ScriptedModel, label_of, scripted_hub
from polyfuse.testing.scripted import prefer
from polyfuse.types import Message

PARIS = "Paris"
LOVE = "L'Étoile, la Cité, le Poulet (The City of Love) is the capital of France."


def incoherent(messages: Sequence[Message]) -> str:
    """The verdict seen in the panel: "Paris" scored 1 with the reason "The City of Love", the other answer
    scored 2 with the reason "Paris", and "Paris" chosen. Plus an analysis, for when one is asked."""
    paris, love = label_of(messages, PARIS), label_of(messages, "City of Love")
    return json.dumps(
        {
            "scores": {
                paris: {"reason": "The City of Love", "score": 1},
                love: {"reason": "Paris", "score": 2},
            },
            "consensus": ["the question is about France"],
            "contradictions": ["which city is the capital"],
            "agreement": 0.2,
            "choice": paris,
            "analysis": {
                "consensus": ["both name a French city"],
                "contradictions": [
                    {"point": "the capital's name", "stances": {paris: "Paris", love: "The City of Love"}}
                ],
                "partial_coverage": [{"point": "mentions France", "labels": [love]}],
                "unique_insights": {paris: [], love: ["a nickname"]},
                "blind_spots": ["population"],
            },
        }
    )


def models() -> dict[str, ScriptedModel]:
    return {
        "gemma": ScriptedModel("gemma", default=PARIS),
        "smol": ScriptedModel("smol", default=LOVE),
        "judge": ScriptedModel("judge", default=Reply(fn=incoherent), scores=prefer("Paris")),
    }


@pytest.mark.parametrize("order", ["scripted/gemma,scripted/smol", "scripted/smol,scripted/gemma"])
async def test_an_incoherent_verdict_is_repaired_before_it_is_shown(order):
    request = FusionRequest.from_prompt(
        "What is the capital of France?", order, judge="scripted/judge", judge_method="json"
    )
    result = await fuse(request, scripted_hub(models()))
    v = result.verdict
    reasons = {s.member: s.reason for s in v.scores}
    scores = {s.member: s.score for s in v.scores}
    # each reason now sits with the answer it describes; the scores stay where the judge put them
    assert reasons == {"scripted/gemma": "Paris", "scripted/smol": "The City of Love"}
    assert scores == {"scripted/gemma": 1, "scripted/smol": 2}
    # the choice follows the scores, and the verdict says what was repaired
    assert v.choice == "scripted/smol" and result.answer == LOVE
    assert any("scored" in n and "the choice follows the scores" in n for n in v.notes)
    assert sum("moved there" in n for n in v.notes) == 2
    shown = report(result)
    assert "chose scripted/smol by json" in shown
    gemma_line = next(line for line in shown.splitlines() if "=scripted/gemma:" in line)
    smol_line = next(line for line in shown.splitlines() if "=scripted/smol:" in line)
    assert gemma_line.endswith("1/10 Paris") and smol_line.endswith("2/10 The City of Love")
    assert "repaired: the judge named" in shown


PANEL_CONFIG = {
    "default_preset": "shown",
    "presets": {
        "shown": {
            "pool": ["scripted/gemma", "scripted/smol"],
            "judge": "scripted/judge",
            "mode": "best-of",
            "judge_method": "json",
        }
    },
    "server": {"models": ["scripted/gemma", "scripted/smol", "scripted/judge"]},
    "log": {"enabled": False},
}


@pytest.fixture(scope="module")
def panel():
    from playwright.sync_api import sync_playwright

    from browser import ARGS, CHROMIUM
    from serverkit import ServerThread

    config = load_config(data=PANEL_CONFIG)
    app = create_app(config, scripted_hub(models(), config), env={})
    with ServerThread(app) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser, srv.url
        browser.close()


def _fuse_in_panel(panel, method: str, analysis: bool):
    from playwright.sync_api import expect

    browser, url = panel
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    expect(page.locator("#preset option")).not_to_have_count(0, timeout=10_000)
    page.select_option("#judge-method", method)
    if analysis:
        page.check("#analysis")
    page.fill("#prompt", "What is the capital of France?")
    page.click("#run")
    expect(page.locator("#status")).to_have_text("done", timeout=20_000)
    assert errors == []
    return page


def test_the_panel_shows_the_repaired_verdict_and_the_analysis(panel):
    from playwright.sync_api import expect

    page = _fuse_in_panel(panel, "json", analysis=True)
    rows = page.locator("#scores tbody tr").all_inner_texts()
    by_member = {r.split("\t")[0].split(" = ")[1]: r.split("\t")[1:] for r in rows}
    assert by_member["scripted/gemma"] == ["1", "Paris"]
    assert by_member["scripted/smol"] == ["2", "The City of Love"]
    expect(page.locator('.member[data-member="scripted/smol"]')).to_have_class("member chosen")
    assert page.locator("#answer").inner_text().strip() == LOVE
    notes = page.locator("#verdict-notes li").all_inner_texts()
    assert any("the choice follows the scores" in n for n in notes)
    assert "chosen by json" in page.locator("#verdict-method").inner_text()
    # the analysis: each model's stance on the contradiction, partial coverage, unique insights, blind spots
    expect(page.locator("#analysis-view")).to_be_visible()
    stances = page.locator("#analysis-contradictions tr").all_inner_texts()
    assert sorted(stances) == sorted(["scripted/gemma\tParis", "scripted/smol\tThe City of Love"])
    assert page.locator("#analysis-coverage").inner_text() == "mentions France (scripted/smol)"
    assert page.locator("#analysis-insights").inner_text() == "scripted/smol: a nickname"
    assert page.locator("#analysis-blind-spots").inner_text() == "population"
    assert page.locator("#consensus").inner_text() == "both name a French city"
    page.close()


def test_the_panel_shows_a_probability_judges_method_and_confidence(panel):
    page = _fuse_in_panel(panel, "label", analysis=False)
    method = page.locator("#verdict-method").inner_text()
    assert "chosen by label" in method and "confidence" in method and "chose scripted/gemma" in method
    assert page.locator("#answer").inner_text().strip() == PARIS
    rows = page.locator("#scores tbody tr").all_inner_texts()
    assert all("\tp=0." in r for r in rows) and len(rows) == 2
    assert page.locator("#analysis-view").is_hidden()
    page.close()
