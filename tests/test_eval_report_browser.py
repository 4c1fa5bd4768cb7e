"""The HTML report in a real headless chromium: it opens without console errors, fetches nothing, draws one
point and one latency box per arm, and its tables sort. First on a scripted evaluation with every mode, then
end to end: ``polyfuse eval`` on the bundled local models over a shipped dataset."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from browser import open_page
from conftest import write_json
from polyfuse.eval import EvalSpec, evaluate, load_dataset
from polyfuse.providers.base import parse_pool
from polyfuse.testing import Reply, ScriptedModel, scripted_hub

pytestmark = pytest.mark.browser


def check_report(html: Path, report: dict, screenshot: Path) -> None:
    arms = [a["arm"] for a in report["arms"]]
    with open_page(html) as (page, problems):
        assert page.title().startswith("polyfuse eval:")
        assert page.inner_text("#recommendation") == report["recommendation"]
        assert page.locator("#plot-accuracy g.point").count() == len(arms)
        assert page.locator("#plot-latency g.box").count() == len(arms)
        for plot in ("#plot-accuracy svg", "#plot-latency svg"):
            box = page.locator(plot).bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
        rows = page.locator("#metrics tbody tr")
        assert rows.count() == len(arms)
        assert [rows.nth(i).locator("td").first.inner_text() for i in range(len(arms))] == arms
        page.click("#metrics th:nth-child(8)")  # tokens/item, ascending
        tokens = [
            float(rows.nth(i).locator("td").nth(7).get_attribute("data-sort")) for i in range(len(arms))
        ]
        assert tokens == sorted(tokens)
        page.click("#metrics th:nth-child(8)")  # and descending
        tokens = [
            float(rows.nth(i).locator("td").nth(7).get_attribute("data-sort")) for i in range(len(arms))
        ]
        assert tokens == sorted(tokens, reverse=True)
        assert page.locator("#items tbody tr").count() == report["dataset"]["items"]
        page.screenshot(path=str(screenshot), full_page=True)
        assert problems == []


def test_scripted_report_with_every_mode_opens_cleanly(tmp_path):
    def answer(name):
        return Reply(fn=lambda m: f"{name}: Paris" if "France" in m[-1].content else f"{name}: no idea")

    models = {
        "a": ScriptedModel("a", default=answer("a")),
        "b": ScriptedModel("b", default=answer("b")),
        "judge": ScriptedModel("judge", default=Reply(text=write_json("Paris <script>alert(1)</script>"))),
    }
    spec = EvalSpec(
        load_dataset("capitals", limit=4), parse_pool("scripted/a,scripted/b"), judge="scripted/judge",
        modes=["single", "best-of", "merge", "debate", "vote"], rounds=1,
    )  # fmt: skip

    async def run():
        async with scripted_hub(models) as hub:
            return await evaluate(spec, hub, tmp_path / "out")

    out = asyncio.run(run())  # playwright's sync API below must not run inside an event loop
    html = out.html_path.read_text()
    assert "<script>alert(1)" not in html  # model text is escaped, never markup
    check_report(out.html_path, json.loads(out.json_path.read_text()), tmp_path / "scripted.png")


@pytest.mark.local
def test_end_to_end_on_the_bundled_models(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    (tmp_path / "polyfuse.toml").write_text("[log]\nenabled = false\n")
    proc = subprocess.run(
        [sys.executable, "-m", "polyfuse.cli.main", "eval", "capitals", "--limit", "2",
         "--pool", "local/smollm2-135m,local/gemma3-270m", "--judge", "local/smollm2-135m",
         "--modes", "single,best-of,vote", "--max-tokens", "16", "--sc-k", "2", "--concurrency", "1",
         "--out", "out"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    arms = {a["arm"]: a for a in report["arms"]}
    assert list(arms) == [
        "single:local/smollm2-135m", "single:local/gemma3-270m", "best-of", "vote", "self-consistency",
    ]  # fmt: skip
    assert report["complete"] and all(a["n"] == 2 for a in arms.values())
    assert all(a["tokens_total"] > 0 and a["cost_total"] == 0.0 for a in arms.values())
    assert arms["best-of"]["tokens_mean"] > arms["vote"]["tokens_mean"]  # the judge call costs tokens
    assert report["recommendation"] in proc.stdout
    assert report["recommendation"].startswith(("ship ", "fusion does not pay here"))
    check_report(tmp_path / "out" / "report.html", report, tmp_path / "local.png")
