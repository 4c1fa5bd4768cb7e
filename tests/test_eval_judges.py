"""Choosing the judge is measured: judges and methods side by side (accuracy, judge accuracy, position bias,
tokens), a recommendation that names the judge and method to ship, and plain prompt/answer items whose scorer
is inferred per item."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from polyfuse.eval import EvalSpec, evaluate
from polyfuse.eval.datasets import parse_lines
from polyfuse.providers.base import parse_pool
from polyfuse.providers.logprobs import Options
from polyfuse.testing import Reply, ScriptedModel, scripted_hub
from polyfuse.testing.scripted import _FENCE
from polyfuse.types import Message


def _dataset(n: int):
    lines = [
        json.dumps({"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": 2 * i}) for i in range(1, n + 1)
    ]
    return parse_lines(lines, name="sums", source="test")


def _i(messages: Sequence[Message]) -> int:
    return int(re.search(r"What is (\d+) \+", "\n".join(m.content or "" for m in messages)).group(1))


def _member(name: str, right_on: set[int]) -> ScriptedModel:
    def answer(messages):
        i = _i(messages)
        return f"{name} says {2 * i if i in right_on else 1000 + i}"

    return ScriptedModel(name, default=Reply(fn=answer))


def _knows(messages: Sequence[Message], options: Options) -> dict[str, float]:
    """A probability judge that recognises the right sum."""
    right = f"says {2 * _i(messages)}"
    fenced = dict(_FENCE.findall(messages[-1].content or ""))
    if set(options) == {"yes", "no"}:
        ok = any(body.strip().endswith(right) for body in fenced.values())
        return {"yes": -0.1 if ok else -3.0, "no": -3.0 if ok else -0.1}
    return {label: -0.1 if fenced.get(label, "").strip().endswith(right) else -3.0 for label in options}


def _first_label(messages: Sequence[Message]) -> str:
    """A JSON judge that always picks the first answer it is shown: pure position bias."""
    labels = re.findall(r"<<<ANSWER (\w+) ", messages[-1].content or "")
    return json.dumps({"scores": {lb: {"reason": "r", "score": 9 if lb == labels[0] else 3} for lb in labels},
                       "agreement": 0.1, "choice": labels[0], "answer": "a sum"})  # fmt: skip


async def test_judges_and_methods_side_by_side_with_position_bias_and_a_named_recommendation(tmp_path):
    # alpha knows the odd items, bravo the even ones: only a judge that recognises the right answer wins
    models = {
        "alpha": _member("alpha", set(range(1, 13, 2))),
        "bravo": _member("bravo", set(range(2, 13, 2))),
        "sharp": ScriptedModel("sharp", default=Reply(fn=_first_label), scores=_knows),
        "lazy": ScriptedModel("lazy", default=Reply(fn=_first_label)),
    }
    spec = EvalSpec(
        _dataset(12), parse_pool("scripted/alpha,scripted/bravo"), judges=["scripted/sharp", "scripted/lazy"],
        judge_methods=["json", "label"], modes=["single", "best-of"], equal_budget=False,
    )  # fmt: skip
    async with scripted_hub(models) as hub:
        out = await evaluate(spec, hub, tmp_path)
    r = out.report
    arms = {m.arm: m for m in r.arms}
    assert set(arms) == {
        "single:scripted/alpha", "single:scripted/bravo", "best-of:json@scripted/sharp",
        "best-of:label@scripted/sharp", "best-of:json@scripted/lazy", "best-of:label@scripted/lazy",
    }  # fmt: skip
    sharp = arms["best-of:label@scripted/sharp"]
    assert (sharp.correct, sharp.judge_accuracy, sharp.method, sharp.judge) == (
        12,
        1.0,
        "label",
        "scripted/sharp",
    )
    assert (sharp.position_probed, sharp.position_bias) == (12, 0.0)
    assert sharp.brier is not None and sharp.brier < 0.05  # confident and right
    # the first-label JSON judges flip whenever the order flips: a 100% position bias
    for name in ("best-of:json@scripted/sharp", "best-of:json@scripted/lazy"):
        assert (arms[name].position_probed, arms[name].position_bias, arms[name].method) == (12, 1.0, "json")
    # lazy has no log-probabilities: its label arm fell back to json, and says so in every verdict
    lazy = arms["best-of:label@scripted/lazy"]
    assert lazy.method == "json" and lazy.correct == arms["best-of:json@scripted/lazy"].correct
    assert all(x.method == "json" for x in out.results if x.arm == "best-of:label@scripted/lazy")
    assert (r.recommended_judge, r.recommended_judge_method) == ("scripted/sharp", "label")
    assert r.recommendation.startswith("ship best-of:label@scripted/sharp: 100%")
    assert (
        "judge: scripted/sharp with method label (judge accuracy 100% when a right answer existed, "
        "position bias 0% on 12 items" in r.recommendation
    )
    assert sharp.judge_tokens_mean > 0 and sharp.tokens_mean > sharp.judge_tokens_mean
    assert r.config["judges"] == ["scripted/sharp", "scripted/lazy"]
    assert r.config["judge_methods"] == ["json", "label"]
    html = out.html_path.read_text()
    judges = html[html.index('<table id="judges"') : html.index("</table>", html.index('<table id="judges"'))]
    assert judges.count("<tr>") == 1 + 4 and "best-of:label@scripted/sharp" in judges  # a header and 4 arms


async def test_plain_prompt_answer_items_infer_their_scorer_and_the_report_says_which(tmp_path):
    lines = [
        json.dumps({"id": "n", "prompt": "What is 2 + 2?", "answer": 4}),
        json.dumps({"id": "s", "prompt": "What is 3 + 3?", "answer": "6"}),
        json.dumps({"id": "mc", "prompt": "Red planet?\nA) Venus\nB) Mars", "answer": "B"}),
        json.dumps({"id": "mc2", "prompt": "Pick one", "answer": "c", "choices": ["x", "y", "z"]}),
        json.dumps({"id": "name", "prompt": "Capital of France?", "answer": "Paris"}),
        json.dumps({"id": "given", "prompt": "Say hi", "answer": "hi", "scorer": "contains"}),
    ]
    data = parse_lines(lines, name="plain", source="test")
    scorers = {i.id: (i.scorer, i.scorer_inferred) for i in data.items}
    assert scorers == {
        "n": ("numeric", True), "s": ("numeric", True), "mc": ("choice", True), "mc2": ("choice", True),
        "name": ("normalized", True), "given": ("contains", False),
    }  # fmt: skip
    answers = {"n": "4", "s": "six", "mc": "B) Mars", "mc2": "C", "name": "paris.", "given": "hi there"}

    def answer(messages):
        text = messages[-1].content
        return next(
            a
            for key, a in answers.items()
            if data.items[[i.id for i in data.items].index(key)].prompt == text
        )

    models = {"m": ScriptedModel("m", default=Reply(fn=answer))}
    spec = EvalSpec(data, parse_pool("scripted/m"), modes=["single"], equal_budget=False)
    async with scripted_hub(models) as hub:
        out = await evaluate(spec, hub, tmp_path)
    right = {x.item: x.correct for x in out.results}
    assert right == {"n": True, "s": False, "mc": True, "mc2": True, "name": True, "given": True}
    report = out.report
    assert (
        report.dataset["item_scorers"]["mc"] == "choice"
        and report.dataset["inferred_scorers"]["n"] == "numeric"
    )
    assert "given" not in report.dataset["inferred_scorers"]
    note = next(n for n in report.notes if n.startswith("scorers inferred per item"))
    assert (
        "choice for 2 item(s)" in note
        and "normalized for 1 item(s)" in note
        and "numeric for 2 item(s)" in note
    )
