"""The probability-scoring judge (label, yes/no, both): choice, position-bias cancellation, pooling of same
answers, confidence, and the JSON fallback for a judge without log-probabilities, with the scripted provider.
Every fixture puts the right answer in each position and asserts which answer won."""

from __future__ import annotations

import math

import pytest

from conftest import picker
from polyfuse import FusionRequest, fuse
from polyfuse.fusion.scoring import decide, method_names
from polyfuse.providers.logprobs import OptionLogprobs, match_top_logprobs
from polyfuse.testing import Reply, ScriptedModel, scripted_hub
from polyfuse.testing.scripted import prefer
from polyfuse.types import Candidate, Usage

ANSWERS = ["Lyon", "Paris", "Marseille"]


def pool_with_right_at(position: int) -> tuple[dict[str, ScriptedModel], str]:
    """Three members; the one at ``position`` says Paris. Returns the models and the right member id."""
    texts = [t for t in ANSWERS if t != "Paris"]
    texts.insert(position, "Paris")
    models = {n: ScriptedModel(n, default=t) for n, t in zip("abc", texts, strict=True)}
    return models, f"scripted/{'abc'[position]}"


def req(mode: str = "best-of", method: str = "label", **kw) -> FusionRequest:
    return FusionRequest.from_prompt(
        "Capital of France?", "scripted/a,scripted/b,scripted/c", judge="scripted/judge", mode=mode,
        judge_method=method, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["label", "yesno", "label+yesno"])
@pytest.mark.parametrize("position", [0, 1, 2])
async def test_probability_judge_picks_the_right_answer_wherever_it_stands(method, position):
    models, right = pool_with_right_at(position)
    models["judge"] = ScriptedModel("judge", scores=prefer("Paris"))
    for seed in range(3):  # whatever the presentation order
        result = await fuse(req(method=method, shuffle_seed=seed), scripted_hub(models))
        v = result.verdict
        assert result.answer == "Paris" and v.choice == right
        assert v.method == method and v.judge == "scripted/judge" and v.method_note is None
        assert 0.5 < v.confidence <= 1 and v.scores and not v.judge_failed
        assert {s.member for s in v.scores} == {"scripted/a", "scripted/b", "scripted/c"}
        top = max(v.scores, key=lambda s: s.score)
        assert top.member == right  # the choice follows the scores
    assert models["judge"].calls == []  # no text generated: forward passes only


async def test_label_averages_over_rotations_so_a_first_position_bias_cancels():
    models, _ = pool_with_right_at(1)
    # a judge that only likes the first label: every candidate gets it once, so none is favoured
    models["judge"] = ScriptedModel("judge", scores=prefer("nothing-matches", position_bias=4.0))
    result = await fuse(req(method="label"), scripted_hub(models))
    probs = {s.member: s.score for s in result.verdict.scores}
    assert max(probs.values()) - min(probs.values()) < 1e-6
    assert len(models["judge"].scored) == 3  # one forward pass per rotation
    firsts = [
        m[-1].content.split("<<<ANSWER A ")[1].split(">>>\n")[1].split("\n")[0]
        for m in models["judge"].scored
    ]
    assert sorted(firsts) == sorted(ANSWERS)  # each answer was presented first once


async def test_a_biased_judge_is_overruled_by_its_preference_once_averaged():
    models, right = pool_with_right_at(2)
    models["judge"] = ScriptedModel("judge", scores=prefer("Paris", strength=3.0, position_bias=2.0))
    for seed in range(4):
        result = await fuse(req(method="label", shuffle_seed=seed), scripted_hub(models))
        assert result.verdict.choice == right


def test_same_answers_pool_their_probability():
    cands = [
        Candidate(member="a", model="x", text="Lyon"),
        Candidate(member="b", model="x", text="Paris"),
        Candidate(member="c", model="x", text="paris."),
    ]
    # the judge likes Lyon best alone, but Paris is said twice: 0.4 against 0.3 + 0.3
    scored = decide("label", {"a": 0.4, "b": 0.3, "c": 0.3}, cands, [])
    assert scored.choice in ("b", "c") and scored.confidence == pytest.approx(0.6)
    # yes/no probabilities are per answer: they average, they do not add up
    scored = decide("yesno", {"a": 0.7, "b": 0.5, "c": 0.6}, cands, [], pool_by_sum=False)
    assert scored.choice == "a" and scored.confidence == pytest.approx(0.7)


def test_exact_ties_go_to_the_more_confident_member_not_the_first():
    for first_confident in (True, False):
        lp = [-0.2, -2.0] if first_confident else [-2.0, -0.2]
        cands = [
            Candidate(member=m, model="x", text=t, logprob=p)
            for m, t, p in zip("ab", ["Lyon", "Paris"], lp, strict=True)
        ]
        scored = decide("label", {"a": 0.5, "b": 0.5}, cands, [])
        assert scored.choice == ("a" if first_confident else "b")


@pytest.mark.parametrize("mode", ["best-of", "merge"])
async def test_a_judge_without_logprobs_falls_back_to_json_and_says_so(mode):
    models, right = pool_with_right_at(2)
    if mode == "best-of":
        models["judge"] = ScriptedModel("judge", default=Reply(fn=picker("Paris")))
    else:
        from conftest import write_json

        models["judge"] = ScriptedModel("judge", default=write_json("Paris"))
    result = await fuse(req(mode, method="label+yesno"), scripted_hub(models))
    v = result.verdict
    assert v.method == "json" and "offers none" in v.method_note and "label+yesno" in v.method_note
    assert result.answer == "Paris" and len(models["judge"].calls) == 1  # one JSON call, no failed attempt
    if mode == "best-of":
        assert v.choice == right and v.confidence is None


def test_every_method_is_known_to_the_request_and_unknown_ones_are_refused():
    from polyfuse.errors import InvalidRequestError

    assert method_names() == ["json", "auto", "label", "yesno", "label+yesno", "likelihood", "pmi"]
    from typing import get_args

    from polyfuse.server.schemas import FusionOptions

    # the server's fusion object offers exactly the methods the engine knows
    offered = get_args(get_args(FusionOptions.model_fields["judge_method"].annotation)[0])
    assert list(offered) == method_names()
    with pytest.raises(InvalidRequestError, match="unknown judge method 'vibes'; valid methods: json"):
        req(method="vibes")


def test_top_logprobs_are_matched_to_options_with_a_floor_for_the_missing():
    top = [(" A", -0.2), ("B", -1.9), ("The", -3.0), ("(A", -4.0)]
    got = match_top_logprobs(top, {"A": ["A", " A"], "B": ["B", " B"], "C": ["C", " C"]})
    assert got["A"] == pytest.approx(math.log(math.exp(-0.2) + math.exp(-4.0)))
    assert got["B"] == pytest.approx(-1.9)
    assert got["C"] < -4.0  # absent from the top list: less likely than anything listed
    result = OptionLogprobs(got, Usage(), 0.0, "m")
    probs = result.normalized()
    assert max(probs, key=probs.get) == "A" and sum(probs.values()) == pytest.approx(1.0)


async def test_an_http_judge_without_logprobs_falls_back_once_and_remembers():
    """A real OpenAI-compatible upstream on loopback that answers without ``logprobs``: the first fusion asks
    once, learns, and falls back to the JSON verdict (said in the verdict); the next never asks again."""
    from polyfuse.config import Config
    from polyfuse.providers.registry import ProviderHub
    from polyfuse.testing.upstream import Behaviour, FakeUpstream

    verdict = (
        '{"scores": {"A": {"reason": "r", "score": 9}, "B": {"reason": "r", "score": 2}}, "choice": "A"}'
    )
    behaviours = {"a": Behaviour(text="Paris"), "b": Behaviour(text="Lyon"), "judge": Behaviour(text=verdict)}
    with FakeUpstream(behaviours) as up:
        config = Config.model_validate({"providers": {"fake": {"base_url": up.base_url, "max_retries": 0}}})
        async with ProviderHub.from_config(config, env={}) as hub:
            results = []
            for _ in range(2):
                request = FusionRequest.from_prompt(
                    "Capital of France?", "fake/a,fake/b", judge="fake/judge", judge_method="label"
                )
                results.append(await fuse(request, hub))
        asked = [r for r in up.requests if r["model"] == "judge" and r.get("logprobs")]
        written = [r for r in up.requests if r["model"] == "judge" and "response_format" in r]
    assert len(asked) == 1 and asked[0]["top_logprobs"] == 20 and asked[0]["max_tokens"] == 1
    assert len(written) == 2
    for result in results:
        v = result.verdict
        assert v.method == "json" and "needs log-probabilities" in v.method_note and not v.judge_failed
        assert result.answer in ("Paris", "Lyon") and v.choice == v.labels["A"]
    members = [r for r in up.requests if r["model"] in ("a", "b")]
    assert all(r["logprobs"] is True for r in members)  # members are asked for their confidence


def _reader(messages, reply: str) -> float:
    """Reply log-probabilities of a judge that knows Paris: likely after the question, rare without it; and
    a generic sentence that is likely anywhere (what raw likelihood falls for, and pmi does not)."""
    asked = "France" in (messages[-1].content or "")
    if reply == "Paris":
        return -0.8 if asked else -9.0
    if reply.startswith("France is a country"):
        return -0.5 if asked else -0.7
    return -3.0 if asked else -4.0


@pytest.mark.parametrize("position", [0, 1, 2])
async def test_pmi_prefers_what_the_question_makes_likely_over_what_is_likely_anywhere(position):
    texts = ["France is a country in Europe.", "Lyon"]
    texts.insert(position, "Paris")
    models = {n: ScriptedModel(n, default=t) for n, t in zip("abc", texts, strict=True)}
    models["judge"] = ScriptedModel("judge", reply_scores=_reader, scores=prefer("Paris"))
    raw = await fuse(req(method="likelihood"), scripted_hub(models))
    assert raw.answer == "France is a country in Europe."  # likely anywhere: raw likelihood falls for it
    pmi = await fuse(req(method="pmi"), scripted_hub(models))
    assert pmi.answer == "Paris" and pmi.verdict.choice == f"scripted/{'abc'[position]}"
    assert pmi.verdict.method == "pmi" and len(pmi.judge_calls) == 6  # with and without the question, each
    neutral = [m for m in models["judge"].scored if m[0].content == "Answer:"]
    assert len(neutral) == 3 and all(
        len(m) == 2 for m in neutral
    )  # the question-free premise, then the reply


async def test_a_noisy_judge_still_chooses_the_same_answer_in_either_order():
    """A judge whose label probabilities are noise (a hash of the prompt): averaged over every rotation, with
    the same fence code for the same answers, the two presentation orders give the same prompts, so the same
    choice. A fresh random code per run would make the choice flip with the order about half the time."""
    import hashlib

    from polyfuse.fusion.choosing import choose_in_order

    def noise(messages, options):
        text = messages[-1].content or ""
        return {o: -int(hashlib.sha256((text + o).encode()).hexdigest()[:6], 16) / 2**24 * 4 for o in options}

    for i in range(12):
        texts = [f"answer {i} one", f"answer {i} two"]
        models = {n: ScriptedModel(n, default=t) for n, t in zip("ab", texts, strict=True)}
        judge = ScriptedModel("judge", scores=noise)
        models["judge"] = judge
        request = FusionRequest.from_prompt(
            "Q?", "scripted/a,scripted/b", judge="scripted/judge", judge_method="label"
        )
        result = await fuse(request, scripted_hub(models))
        order = list(result.verdict.labels.values())
        again = await choose_in_order(request, judge, result.candidates, list(reversed(order)))
        assert again == result.verdict.choice


async def test_auto_uses_pmi_where_it_can_then_label_then_the_written_verdict():
    def build(**judge):
        models = {
            n: ScriptedModel(n, default=t) for n, t in zip("abc", ["Lyon", "Paris", "Nice"], strict=True)
        }
        models["judge"] = ScriptedModel("judge", default=Reply(fn=picker("Paris")), **judge)
        return models

    request = req(method="auto")
    assert FusionRequest.model_fields["judge_method"].default == "auto"  # the default method
    local = await fuse(request, scripted_hub(build(scores=prefer("Paris"), reply_scores=_reader)))
    assert (local.verdict.method, local.verdict.method_note, local.answer) == ("pmi", None, "Paris")
    remote = await fuse(request, scripted_hub(build(scores=prefer("Paris"))))  # next-token logprobs only
    assert remote.verdict.method == "label" and "pmi needs the probabilities" in remote.verdict.method_note
    assert remote.answer == "Paris"
    none = await fuse(request, scripted_hub(build()))
    assert (
        none.verdict.method == "json" and "offers none" in none.verdict.method_note and none.answer == "Paris"
    )


def _http_hub(up):
    from polyfuse.config import Config
    from polyfuse.providers.registry import ProviderHub

    config = Config.model_validate({"providers": {"fake": {"base_url": up.base_url, "max_retries": 0}}})
    return ProviderHub.from_config(config, env={})


async def test_an_http_judge_with_top_logprobs_is_read_and_a_constant_position_preference_cancels():
    """A real HTTP upstream whose judge always puts most probability on "A": label reads top_logprobs, and
    averaged over both orders each answer gets exactly half, so position alone decides nothing."""
    import json as _json

    from polyfuse.testing.upstream import Behaviour, FakeUpstream

    top = [
        {"token": " A", "logprob": -0.1},
        {"token": "B", "logprob": -2.4},
        {"token": "The", "logprob": -3.0},
    ]
    reply = {
        "model": "judge",
        "choices": [{"index": 0, "message": {"content": "A"}, "finish_reason": "length",
                     "logprobs": {"content": [{"token": " A", "logprob": -0.1, "top_logprobs": top}]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 1},
    }  # fmt: skip
    behaviours = {
        "a": Behaviour(text="Paris"),
        "b": Behaviour(text="Lyon"),
        "judge": Behaviour(body=_json.dumps(reply).encode()),
    }
    with FakeUpstream(behaviours) as up:
        async with _http_hub(up) as hub:
            request = FusionRequest.from_prompt(
                "Capital?", "fake/a,fake/b", judge="fake/judge", judge_method="label"
            )
            result = await fuse(request, hub)
            assert hub.model("fake/judge").supports_logprobs is True
        asked = [r for r in up.requests if r["model"] == "judge"]
    v = result.verdict
    assert v.method == "label" and v.method_note is None and not v.judge_failed
    assert [s.score for s in v.scores] == [0.5, 0.5] and v.confidence == 0.5
    assert len(asked) == 2 and all(r["max_tokens"] == 1 and r["top_logprobs"] == 20 for r in asked)
    assert {
        r["messages"][0]["content"].index("Paris") < r["messages"][0]["content"].index("Lyon") for r in asked
    } == {
        True,
        False,
    }  # both orders were presented
    assert [c.usage.prompt_tokens for c in result.judge_calls] == [50, 50]


async def test_an_http_judge_that_refuses_logprobs_by_name_is_remembered_and_falls_back():
    from polyfuse.testing.upstream import Behaviour, FakeUpstream

    refusal = {
        "error": {
            "message": "logprobs is not supported",
            "param": "logprobs",
            "code": "unsupported_parameter",
        }
    }
    verdict = (
        '{"scores": {"A": {"reason": "r", "score": 9}, "B": {"reason": "r", "score": 2}}, "choice": "A"}'
    )
    behaviours = {
        "a": Behaviour(text="Paris"),
        "b": Behaviour(text="Lyon"),
        "judge": Behaviour(text=verdict, statuses=[400], error_body=refusal),
    }
    with FakeUpstream(behaviours) as up:
        async with _http_hub(up) as hub:
            request = FusionRequest.from_prompt(
                "Capital?", "fake/a,fake/b", judge="fake/judge", judge_method="label"
            )
            result = await fuse(request, hub)
            assert hub.model("fake/judge").supports_logprobs is False
    v = result.verdict
    assert v.method == "json" and "refused log-probabilities" in v.method_note and not v.judge_failed
    assert v.choice == v.labels["A"] and result.answer == {"fake/a": "Paris", "fake/b": "Lyon"}[v.choice]
