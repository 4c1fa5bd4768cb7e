"""Which answer wins, with the right answer in every position of the pool: vote, the judge-failure fallback,
skip-judge-on-consensus (three paths through the vote), best-of's JSON judge and member-confidence ties.

Were the winner replaced by the first successful candidate, each of these fails for some position."""

from __future__ import annotations

import pytest

from conftest import picker
from polyfuse import FusionRequest, fuse
from polyfuse.errors import UpstreamError
from polyfuse.testing import Reply, ScriptedModel, scripted_hub

WRONG = ["Lyon", "Marseille"]


def pool(
    majority_at: list[int], size: int = 3, judge: ScriptedModel | None = None
) -> dict[str, ScriptedModel]:
    """``size`` members; those at ``majority_at`` say Paris (in different spellings), the others differ."""
    spellings = iter(["Paris", "paris.", "Paris!"])
    wrong = iter(WRONG + ["Nice", "Lille"])
    names = "abcde"[:size]
    models = {
        n: ScriptedModel(n, default=next(spellings) if i in majority_at else next(wrong))
        for i, n in enumerate(names)
    }
    models["judge"] = judge or ScriptedModel("judge", default=Reply(error=UpstreamError("judge down")))
    return models


def request(models: dict[str, ScriptedModel], mode: str, **kw) -> FusionRequest:
    members = ",".join(f"scripted/{n}" for n in models if n != "judge")
    return FusionRequest.from_prompt("Capital of France?", members, judge="scripted/judge", mode=mode, **kw)


MAJORITIES = [[0, 1], [1, 2], [0, 2]]


@pytest.mark.parametrize("majority", MAJORITIES)
async def test_vote_returns_the_majority_wherever_it_stands(majority):
    models = pool(majority)
    result = await fuse(request(models, "vote"), scripted_hub(models))
    assert result.verdict.choice in {f"scripted/{'abc'[i]}" for i in majority}
    assert "paris" in result.answer.lower() and result.verdict.method == "vote"


@pytest.mark.parametrize("majority", MAJORITIES)
@pytest.mark.parametrize("mode", ["best-of", "merge", "debate"])
async def test_judge_failure_falls_back_to_the_majority_wherever_it_stands(majority, mode):
    models = pool(majority)
    result = await fuse(request(models, mode, rounds=1, judge_method="json"), scripted_hub(models))
    assert result.verdict.judge_failed and "judge down" in result.verdict.failure_reason
    assert "paris" in result.answer.lower()
    assert result.verdict.choice in {f"scripted/{'abc'[i]}" for i in majority}


@pytest.mark.parametrize("majority", [[1, 2], [2, 3], [0, 3]])
async def test_skip_judge_on_consensus_returns_the_majority_wherever_it_stands(majority):
    models = pool(majority, size=4)
    # agreement of 1 pair among 6: (1 + 0*5) / 6 = 0.17, above the threshold: the judge is skipped
    result = await fuse(request(models, "best-of", skip_judge_on_consensus=0.15), scripted_hub(models))
    assert result.verdict.skipped and models["judge"].calls == []
    assert result.verdict.choice in {f"scripted/{'abcd'[i]}" for i in majority}
    assert "paris" in result.answer.lower()


@pytest.mark.parametrize("right", [0, 1, 2])
async def test_best_of_returns_the_candidate_the_json_judge_chose(right):
    texts = list(WRONG)
    texts.insert(right, "Paris")
    models = {n: ScriptedModel(n, default=t) for n, t in zip("abc", texts, strict=True)}
    models["judge"] = ScriptedModel("judge", default=Reply(fn=picker("Paris")))
    for seed in range(3):
        result = await fuse(
            request(models, "best-of", judge_method="json", shuffle_seed=seed), scripted_hub(models)
        )
        assert result.answer == "Paris" and result.verdict.choice == f"scripted/{'abc'[right]}"


@pytest.mark.parametrize("confident", [0, 1, 2])
async def test_a_tied_vote_goes_to_the_most_confident_member(confident):
    models = {n: ScriptedModel(n, default=t) for n, t in zip("abc", ["Paris", "Lyon", "Nice"], strict=True)}
    for i, n in enumerate("abc"):
        models[n].logprob = -0.1 if i == confident else -1.5
    result = await fuse(request(models, "vote"), scripted_hub(models))
    assert result.verdict.choice == f"scripted/{'abc'[confident]}"
    assert {c.member: c.logprob for c in result.candidates}[f"scripted/{'abc'[confident]}"] == -0.1


@pytest.mark.parametrize("confident", [0, 2])
async def test_a_weighted_vote_lets_one_confident_member_outweigh_two_unsure_ones(confident):
    texts = ["Paris", "Paris", "Paris"]
    texts[confident] = "Lyon"
    models = {n: ScriptedModel(n, default=t) for n, t in zip("abc", texts, strict=True)}
    for i, n in enumerate("abc"):
        models[n].logprob = -0.01 if i == confident else -4.0
    plain = await fuse(request(models, "vote"), scripted_hub(models))
    assert plain.answer == "Paris"  # the majority, unweighted
    weighted = await fuse(request(models, "vote", vote_weighted=True), scripted_hub(models))
    assert weighted.answer == "Lyon" and weighted.verdict.choice == f"scripted/{'abc'[confident]}"
