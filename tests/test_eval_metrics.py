"""Evaluation figures computed exactly on a scripted pool whose right and wrong answers are known in advance:
accuracy, Wilson intervals, oracle, judge accuracy, losses, paired comparisons, tokens, cost, the equal-budget
arm and the recommendation."""

from __future__ import annotations

import json
import re

import pytest

from conftest import label_of
from polyfuse.errors import UpstreamError
from polyfuse.eval import EvalSpec, evaluate, sign_test, wilson
from polyfuse.eval.datasets import parse_lines
from polyfuse.eval.metrics import percentile
from polyfuse.providers.base import parse_pool
from polyfuse.testing import Reply, ScriptedModel, scripted_hub
from polyfuse.types import Usage


def _dataset(n: int):
    lines = [json.dumps({"id": f"q{i}", "prompt": f"What is {i} + {i}?", "scorer": "numeric", "answer": 2 * i})
             for i in range(1, n + 1)]  # fmt: skip
    return parse_lines(lines, name="sums", source="test")


def _item(messages) -> int:
    return int(
        re.search(r"What is (\d+) \+", messages[-1].content if messages[-1].role == "user" else "").group(1)
    )


def _member(name: str, right_on: set[int], fail_on: frozenset[int] = frozenset()):
    """Says '<name> says <2i>' on the items it knows, a number of its own otherwise."""
    offset = {"alpha": 1000, "bravo": 2000, "charlie": 3000}[name]

    def answer(messages):
        i = _item(messages)
        if i in fail_on:
            raise UpstreamError("scripted outage")
        return f"{name} says {2 * i if i in right_on else offset + i}"

    return ScriptedModel(
        name, default=Reply(fn=answer, usage=Usage(prompt_tokens=10, completion_tokens=5), cost=0.01)
    )


def _judge(pick: str):
    """best-of: choose the candidate from ``pick``; merge: write alpha's number."""

    def decide(messages):
        text = messages[-1].content
        merged = re.search(r"alpha says (\d+)", text)
        return json.dumps(
            {
                "scores": {},
                "consensus": [],
                "contradictions": [],
                "agreement": 0.3,
                "choice": label_of(messages, f"{pick} says"),
                "answer": f"The sum is {merged.group(1) if merged else 0}.",
            }
        )

    return ScriptedModel(
        "judge", default=Reply(fn=decide, usage=Usage(prompt_tokens=20, completion_tokens=10), cost=0.005)
    )


WILSON_7_OF_10 = (0.3968, 0.8922)  # published reference values for the 95% Wilson interval
WILSON_5_OF_10 = (0.2366, 0.7634)
WILSON_0_OF_10 = (0.0, 0.2775)


def test_wilson_matches_reference_values():
    for (k, n), (lo, hi) in {
        (7, 10): WILSON_7_OF_10,
        (5, 10): WILSON_5_OF_10,
        (0, 10): WILSON_0_OF_10,
    }.items():
        got = wilson(k, n)
        assert got == pytest.approx((lo, hi), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_sign_test_and_percentiles():
    assert sign_test(1, 3) == pytest.approx(10 / 16)  # 2 * (C(4,0) + C(4,1)) / 2^4
    assert sign_test(8, 0) == pytest.approx(2 / 256)
    assert sign_test(0, 0) == 1.0
    assert percentile([1, 2, 3, 4], 0.5) == 2.5 and percentile(
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9
    ) == pytest.approx(9.1)


async def test_metrics_are_exact_on_known_answers(tmp_path):
    models = {
        "alpha": _member("alpha", {1, 2, 3, 4, 5, 6, 7}),
        "bravo": _member("bravo", {1, 2, 3, 4, 8}),
        "charlie": _member("charlie", {9}, fail_on=frozenset({10})),
        "judge": _judge("bravo"),
    }
    spec = EvalSpec(
        _dataset(10),
        parse_pool("scripted/alpha,scripted/bravo,scripted/charlie"),
        judge="scripted/judge",
        modes=["single", "best-of", "merge", "vote"],
        sc_k=3,
        concurrency=3,
    )
    async with scripted_hub(models) as hub:
        out = await evaluate(spec, hub, tmp_path)
    r = out.report
    a, b, c = (r.arm(f"single:scripted/{n}") for n in ("alpha", "bravo", "charlie"))
    assert (a.n, a.correct, b.correct, c.correct) == (10, 7, 5, 1)
    assert (a.ci_low, a.ci_high) == pytest.approx(WILSON_7_OF_10, abs=1e-4)
    assert (b.ci_low, b.ci_high) == pytest.approx(WILSON_5_OF_10, abs=1e-4)
    assert c.errors == 1 and a.errors == 0
    assert (a.tokens_total, a.cost_total, a.cost_per_correct) == (
        150,
        pytest.approx(0.1),
        pytest.approx(0.1 / 7),
    )
    assert c.tokens_total == 135  # item 10 failed: no tokens
    assert r.best_single == "single:scripted/alpha" and r.pool_oracle == pytest.approx(0.9)

    best_of = r.arm("best-of")  # the judge always takes bravo's answer
    assert (best_of.correct, best_of.oracle, best_of.oracle_items) == (5, pytest.approx(0.9), 9)
    assert best_of.judge_accuracy == pytest.approx(5 / 9) and best_of.lost == 4  # items 5, 6, 7, 9
    assert best_of.tokens_total == 10 * 30 + 9 * 45 + 30 and best_of.cost_total == pytest.approx(
        10 * 0.005 + 0.29
    )
    p = best_of.vs_best_single
    assert (p.against, p.items, p.wins, p.losses, p.p_value) == (
        "single:scripted/alpha",
        10,
        1,
        3,
        pytest.approx(0.625),
    )

    merge = r.arm("merge")  # the judge writes alpha's number
    assert (merge.correct, merge.judge_accuracy, merge.lost) == (7, pytest.approx(7 / 9), 2)
    assert (merge.vs_best_single.wins, merge.vs_best_single.losses) == (0, 0)

    vote = r.arm("vote")  # no agreement anywhere: the earliest candidate, alpha, wins every item
    assert (vote.correct, vote.tokens_total, vote.judge_failures) == (7, 9 * 45 + 30, 0)

    sc = r.arm("self-consistency")  # alpha sampled 3 times answers the same each time
    assert (sc.n, sc.correct, sc.tokens_total) == (10, 7, 10 * 45)
    eb = r.equal_budget
    assert (eb.model, eb.k, eb.fusion_arm) == ("scripted/alpha", 3, "vote")  # merge ties at 7 but costs more
    assert (eb.paired.wins, eb.paired.losses) == (0, 0)
    assert r.recommendation.startswith("fusion does not pay here: ship scripted/alpha alone (70% [40%-89%])")
    assert not r.fusion_pays and r.complete

    # each arm on each item exactly once in the results file, as written while running
    lines = [json.loads(x) for x in out.results_path.read_text().splitlines()]
    results = [x for x in lines if x["type"] == "result"]
    assert len(results) == 10 * 7 and len({(x["item"], x["arm"]) for x in results}) == 70
    assert len([x for x in lines if x["type"] == "round"]) == 10
    # the pool was called once per item: every mode replayed the same first round
    # the judge: best-of and merge once per item, plus best-of's position probe (the same candidates in the
    # reverse order) on every item, since the members always gave different answers
    assert len(models["bravo"].calls) == 10 and len(models["judge"].calls) == 30
    best_of = r.arm("best-of")
    assert (best_of.position_probed, best_of.position_bias) == (10, 0.0)  # it chose by content, not place
    assert len(models["alpha"].calls) == 10 + 10 * 3


async def test_fusion_that_pays_is_recommended(tmp_path):
    """Each member knows a different third of the items; a judge that recognises the right answer wins all."""
    thirds = {"alpha": {1, 2, 3, 4}, "bravo": {5, 6, 7, 8}, "charlie": {9, 10, 11, 12}}
    models = {name: _member(name, known) for name, known in thirds.items()}

    def oracle_judge(messages):
        i = int(re.search(r"What is (\d+) \+", messages[-1].content).group(1))
        return json.dumps({"scores": {}, "consensus": [], "contradictions": [], "agreement": 0.1,
                           "choice": label_of(messages, f"says {2 * i}")})  # fmt: skip

    models["judge"] = ScriptedModel("judge", default=Reply(fn=oracle_judge))
    spec = EvalSpec(
        _dataset(12),
        parse_pool("scripted/alpha,scripted/bravo,scripted/charlie"),
        judge="scripted/judge",
        modes=["single", "best-of"],
    )
    async with scripted_hub(models) as hub:
        out = await evaluate(spec, hub, tmp_path)
    r = out.report
    best_of = r.arm("best-of")
    assert (best_of.correct, best_of.judge_accuracy, best_of.lost) == (12, 1.0, 0)
    assert (best_of.vs_best_single.wins, best_of.vs_best_single.losses) == (8, 0)
    assert r.fusion_pays and r.recommended_arm == "best-of"
    assert r.recommendation.startswith("ship best-of: 100% [76%-100%] vs scripted/alpha alone 33%")
    assert "p=0.00781" in r.recommendation
    assert r.arm("self-consistency").correct == 4  # sampling alpha again cannot find what it does not know


# a long answer whose number contradicts every candidate's
LONG_WRONG = (
    "Having weighed both answers at length and checked each step of the addition twice over, I conclude that "
    "the correct result to report here is zero: 0"
)


async def test_debate_oracle_counts_the_final_round(tmp_path):
    """In a debate the judge sees revised answers: bravo is convinced by alpha in round 1."""

    def bravo(messages):
        i = _item(messages[:1])
        revising = len(messages) > 1
        return f"bravo says {2 * i if revising else 2000 + i}"

    models = {
        "alpha": ScriptedModel("alpha", default=Reply(fn=lambda m: f"alpha says {2 * _item(m[:1])}")),
        "bravo": ScriptedModel("bravo", default=Reply(fn=bravo)),
        "judge": ScriptedModel("judge", default=Reply(text=json.dumps(
            {"scores": {}, "consensus": [], "contradictions": [], "agreement": 0.9, "answer": LONG_WRONG}))),
    }  # fmt: skip
    spec = EvalSpec(
        _dataset(3), parse_pool("scripted/alpha,scripted/bravo"), judge="scripted/judge",
        modes=["single", "debate"], rounds=1, equal_budget=False,
    )  # fmt: skip
    async with scripted_hub(models) as hub:
        out = await evaluate(spec, hub, tmp_path)
    debate = out.report.arm("debate")
    assert out.report.arm("single:scripted/bravo").correct == 0
    # the judge writes a wrong number that no final candidate says: the writer is rejected for the vote's
    # pick, so the right answers the debate reached are not lost
    assert (debate.correct, debate.oracle, debate.judge_accuracy, debate.lost) == (3, 1.0, 1.0, 0)
    assert debate.writer_rejected == 3
    [row] = [r for r in out.results if r.arm == "debate" and r.item == "q1"]
    # the final round, and bravo's first answer, which its revision dropped (still a candidate to choose)
    assert [(c.member, c.correct) for c in row.candidates] == [
        ("scripted/alpha", True),
        ("scripted/bravo", True),
        ("scripted/bravo@round0", False),
    ]


async def test_concurrency_limits_items_in_flight(tmp_path):
    seen: list[int] = []

    def slow(name):
        def answer(messages):
            seen.append(models[name].active)  # calls of this model running right now, this one included
            return f"{name} says {2 * _item(messages)}"

        return Reply(fn=answer, delay=0.05)

    models = {
        "alpha": ScriptedModel("alpha", default=slow("alpha")),
        "bravo": ScriptedModel("bravo", default=slow("bravo")),
    }
    spec = EvalSpec(_dataset(8), parse_pool("scripted/alpha,scripted/bravo"), modes=["single", "vote"],
                    equal_budget=False, concurrency=3)  # fmt: skip
    async with scripted_hub(models) as hub:
        out = await evaluate(spec, hub, tmp_path)
    assert out.report.arm("vote").correct == 8
    assert max(seen) == 3  # items really overlap, and never more than three at once


async def test_rubric_grader_is_reported_apart(tmp_path):
    lines = [json.dumps({"id": f"r{i}", "prompt": f"Explain {i}", "scorer": "rubric", "rubric": "mentions X"})
             for i in range(3)]  # fmt: skip
    ds = parse_lines(lines, name="explain", source="test")
    grader = ScriptedModel(
        "grader",
        default=Reply(fn=lambda m: json.dumps({"verdict": "pass" if "X" in m[-1].content.split("grade:")[1] else "fail",
                                               "reason": "r"}), usage=Usage(prompt_tokens=50, completion_tokens=10), cost=0.01),
    )  # fmt: skip
    models = {"alpha": ScriptedModel("alpha", default="It is X."), "bravo": ScriptedModel("bravo", default="No idea."),
              "grader": grader}  # fmt: skip
    with pytest.raises(Exception, match="needs a grader model of its own"):
        EvalSpec(ds, parse_pool("scripted/alpha,scripted/bravo"), modes=["single", "vote"])
    spec = EvalSpec(ds, parse_pool("scripted/alpha,scripted/bravo"), modes=["single", "vote"], grader="scripted/grader",
                    equal_budget=False)  # fmt: skip
    async with scripted_hub(models) as hub:
        out = await evaluate(spec, hub, tmp_path)
    r = out.report
    assert r.arm("single:scripted/alpha").correct == 3 and r.arm("single:scripted/bravo").correct == 0
    assert len(grader.calls) == 6  # each distinct answer graded once per item, then reused by every arm
    assert r.grader == {"model": "scripted/grader", "tokens": 6 * 60, "cost": pytest.approx(0.06)}
    assert r.arm("single:scripted/alpha").cost_total == 0.0  # the grader's cost is not the arm's
    assert any("graded by scripted/grader" in n and "LLM-as-judge" in n for n in r.notes)


def test_results_file_recovers_from_a_cut_line_and_refuses_damage(tmp_path):
    from polyfuse.eval import ResultsFile, ResultsMismatchError
    from polyfuse.eval.results import ArmResult

    path = tmp_path / "results.jsonl"
    header = {"fingerprint": "f1"}
    rf = ResultsFile(path, header)
    rf.add(ArmResult(item="q1", arm="vote", kind="fusion", correct=True))
    rf.close()
    with path.open("a") as fh:
        fh.write('{"type": "result", "item": "q2", "ar')  # the process died mid-write
    again = ResultsFile(path, header)
    assert list(again.results) == [("q1", "vote")] and again.resumed == 1
    again.add(ArmResult(item="q2", arm="vote", kind="fusion"))
    again.close()
    assert [json.loads(x)["type"] for x in path.read_text().splitlines()] == ["header", "result", "result"]
    with pytest.raises(ResultsMismatchError, match="different evaluation"):
        ResultsFile(path, {"fingerprint": "f2"})
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", lines[2]]) + "\n")
    with pytest.raises(ResultsMismatchError, match="line 2 is not valid JSON"):
        ResultsFile(path, header)
    path.write_text('{"type": "hea')  # died while writing the header
    assert ResultsFile(path, header).results == {}
