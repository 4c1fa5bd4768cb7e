"""Strategies, judge repair/fallback and accounting, exercised with the scripted provider."""

import json

import pytest

from conftest import choose_json, picker, write_json
from polyfuse import FusionRequest, FusionResult, fuse
from polyfuse.config import Config
from polyfuse.errors import BudgetExceededError, ConfigError, UpstreamError
from polyfuse.fusion.engine import fuse_events
from polyfuse.testing import Reply, label_of, scripted_hub
from polyfuse.types import GenerationParams

POOL = "scripted/a,scripted/b,scripted/c"


def req(mode: str = "best-of", pool: str = POOL, **kw) -> FusionRequest:
    return FusionRequest.from_prompt("Capital of France?", pool, judge="scripted/judge", mode=mode, **kw)


async def test_best_of_returns_the_judges_choice_verbatim(pool3):
    events = []
    result = await fuse(req(), scripted_hub(pool3), on_event=events.append)
    assert result.answer == "Paris, France."
    assert result.verdict.choice == "scripted/b"
    assert result.verdict.judge == "scripted/judge"
    assert set(result.verdict.labels.values()) == {"scripted/a", "scripted/b", "scripted/c"}
    judge_prompt = pool3["judge"].calls[0][0][1].content
    assert "scripted/" not in judge_prompt  # anonymised
    assert pool3["judge"].calls[0][1].temperature == 0.0
    assert pool3["judge"].calls[0][1].json_schema["properties"]["choice"]["enum"] == ["A", "B", "C"]
    assert "".join(e.text for e in events if e.type == "answer_delta") == result.answer
    assert [e.type for e in events][0] == "run_started" and events[-1].type == "done"


async def test_merge_streams_the_judges_written_answer(pool3):
    pool3["judge"].default = Reply(text=write_json("Paris is the capital of France."), chunks=9)
    events = []
    result = await fuse(req("merge"), scripted_hub(pool3), on_event=events.append)
    assert result.answer == "Paris is the capital of France."
    deltas = [e.text for e in events if e.type == "answer_delta"]
    assert len(deltas) > 1 and "".join(deltas) == result.answer
    assert not result.verdict.judge_failed and not result.verdict.writer_rejected
    # a judge without log-probabilities: the written JSON verdict decides, and the verdict says why
    assert result.verdict.method == "json" and "offers none" in result.verdict.method_note


async def test_debate_runs_n_revision_rounds_then_the_judge_writes(pool3):
    pool3["judge"].default = Reply(text=write_json("Paris."))
    result = await fuse(req("debate", rounds=2), scripted_hub(pool3))
    for name in "abc":
        assert len(pool3[name].calls) == 3  # first answer + 2 revisions
    revision = pool3["c"].calls[1][0]
    assert revision[-2].role == "assistant" and revision[-2].content == "Lyon"
    assert "Paris, France." in revision[-1].content and "scripted/" not in revision[-1].content
    assert len(result.rounds) == 3 and all(len(r) == 3 for r in result.rounds)
    assert result.answer == "Paris."
    assert len(pool3["judge"].calls) == 1


async def test_debate_member_failing_a_round_keeps_its_previous_answer(pool3):
    pool3["c"].queue("Lyon", Reply(error=UpstreamError("boom")), "Paris")
    pool3["judge"].default = Reply(text=write_json("Paris."))
    result = await fuse(req("debate", rounds=2), scripted_hub(pool3))
    final = {c.member: c for c in result.candidates}
    assert final["scripted/c"].text == "Paris" and final["scripted/c"].round == 2
    assert any(f.member == "scripted/c" and "boom" in f.reason for f in result.failed_models)


async def test_vote_makes_no_judge_call_and_picks_the_majority(pool3):
    pool3["c"].default = "paris"
    result = await fuse(req("vote"), scripted_hub(pool3))
    assert pool3["judge"].calls == []
    assert result.answer == "Paris" and result.verdict.judge is None
    assert result.agreement == pytest.approx((0.9 + 1.0 + 0.9) / 3, abs=1e-3)


async def test_skip_judge_on_consensus_saves_the_judge_call(pool3):
    pool3["b"].default = "Paris"
    pool3["c"].default = "paris."
    result = await fuse(req("merge", skip_judge_on_consensus=0.8), scripted_hub(pool3))
    assert pool3["judge"].calls == []
    assert result.verdict.skipped and result.answer == "Paris"


async def test_skip_judge_threshold_not_reached_calls_the_judge(pool3):
    result = await fuse(req("best-of", skip_judge_on_consensus=0.95), scripted_hub(pool3))
    assert len(pool3["judge"].calls) == 1 and not result.verdict.skipped


async def test_garbage_judge_gets_one_repair_retry_then_vote_fallback(pool3):
    pool3["b"].default = "Paris"
    pool3["judge"].default = "I think the second one is best!!"
    events = []
    result = await fuse(req("best-of"), scripted_hub(pool3), on_event=events.append)
    assert len(pool3["judge"].calls) == 2
    repair = pool3["judge"].calls[1][0]
    assert (
        repair[-2].content == "I think the second one is best!!" and "could not be used" in repair[-1].content
    )
    assert result.verdict.judge_failed and "after one repair retry" in result.verdict.failure_reason
    assert result.answer == "Paris" and result.verdict.choice == "scripted/a"
    assert len(result.judge_calls) == 2


async def test_repair_retry_that_succeeds_is_used(pool3):
    pool3["judge"].queue("{broken", Reply(fn=picker("Lyon")))
    result = await fuse(req(), scripted_hub(pool3))
    assert result.answer == "Lyon" and not result.verdict.judge_failed


async def test_merge_judge_that_stops_mid_answer_is_withdrawn_then_falls_back(pool3):
    pool3["judge"].default = '{"answer": ""}'
    events = []
    result = await fuse(req("merge"), scripted_hub(pool3), on_event=events.append)
    assert result.verdict.judge_failed and result.answer
    assert [e.type for e in events].count("answer_reset") == 2
    last_reset = max(i for i, e in enumerate(events) if e.type == "answer_reset")
    after = "".join(e.text for e in events[last_reset:] if e.type == "answer_delta")
    assert after == result.answer


async def test_judge_provider_error_and_timeout_fall_back(pool3):
    pool3["judge"].default = Reply(error=UpstreamError("judge down"))
    result = await fuse(req(), scripted_hub(pool3))
    assert result.verdict.judge_failed and "judge down" in result.verdict.failure_reason and result.answer
    pool3["judge"].default = Reply(hang=True)
    result = await fuse(req(judge_timeout=0.05), scripted_hub(pool3))
    assert result.verdict.judge_failed and result.answer
    assert pool3["judge"].active == 0 and pool3["judge"].cancelled == 1


async def test_accounting_totals_and_overhead(pool3):
    for name, cost in (("a", 0.001), ("b", 0.002), ("c", None)):
        pool3[name].default = Reply(text=name * 3, delay=0.05, cost=cost)
    pool3["judge"].default = Reply(fn=picker("bbb"), delay=0.02, cost=0.0005)
    result = await fuse(req(), scripted_hub(pool3))
    assert result.cost == pytest.approx(0.0035)
    assert result.cost_known is False  # member c had no price
    every = result.candidates + result.judge_calls
    assert result.usage.total_tokens == sum(c.usage.total_tokens for c in every)
    assert result.critical_path >= 0.07
    assert result.wall_time == pytest.approx(result.critical_path + result.overhead)
    assert 0 <= result.overhead < result.wall_time
    again = FusionResult.model_validate_json(result.to_json())
    assert again == result


async def test_tool_calls_of_the_chosen_candidate_come_back(pool3):
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
    pool3["b"].default = Reply(text="", tool_calls=[call])
    pool3["judge"].default = Reply(fn=picker("weather"))
    result = await fuse(req(), scripted_hub(pool3))
    assert result.tool_calls == [call]


async def test_budget_is_checked_before_dispatch(pool3):
    cfg = Config.model_validate(
        {
            "prices": {
                "scripted/a": {"input": 1000, "output": 1000},
                "scripted/b": {"input": 0, "output": 0},
                "scripted/c": {"input": 0, "output": 0},
                "scripted/judge": {"input": 0, "output": 0},
            }
        }
    )
    hub = scripted_hub(pool3, cfg)
    with pytest.raises(BudgetExceededError, match="exceeds max_cost"):
        await fuse(req(max_cost=0.01), hub)
    assert pool3["a"].calls == []
    with pytest.raises(ConfigError, match="cannot estimate the cost"):
        await fuse(req(max_cost=0.01), scripted_hub(pool3))
    ok = await fuse(req(max_cost=100.0), hub)
    assert ok.answer


async def test_fuse_events_yields_progress_then_done(pool3):
    types = [e.type async for e in fuse_events(req(), scripted_hub(pool3))]
    assert types[0] == "run_started" and types[-1] == "done"
    assert types.count("member_started") == 3 and "verdict" in types


def test_unknown_mode_and_model_are_user_errors(pool3):
    import asyncio

    with pytest.raises(ConfigError, match="valid modes"):
        asyncio.run(fuse(req("nope"), scripted_hub(pool3)))
    with pytest.raises(ConfigError, match="valid prefixes"):
        asyncio.run(fuse(req(pool="mystery/model"), scripted_hub(pool3)))


def test_label_helper_finds_fenced_candidates():
    from polyfuse.types import Message

    msg = Message(role="user", content="<<<ANSWER B 0a1b>>>\nhello\n<<<END ANSWER B 0a1b>>>")
    assert label_of([msg], "hell") == "B"
    assert json.loads(choose_json(["A"], "A"))["choice"] == "A"


def _reject_lyon():
    from polyfuse.types import Check

    async def screen(cands):
        out = []
        for c in cands:
            if not c.ok:
                out.append(c)
                continue
            passed = "Lyon" not in c.text
            check = Check(name="not-lyon", passed=passed, detail="" if passed else "says Lyon")
            out.append(
                c.model_copy(
                    update={
                        "checks": [check],
                        "status": "ok" if passed else "rejected",
                        "error": None if passed else "check not-lyon failed: says Lyon",
                    }
                )
            )
        return out

    return screen


async def test_screen_rejects_candidates_before_the_judge_sees_them(pool3):
    pool3["judge"].default = Reply(fn=picker("Paris"))
    events = []
    result = await fuse(req(), scripted_hub(pool3), on_event=events.append, screen=_reject_lyon())
    judge_prompt = pool3["judge"].calls[0][0][1].content
    assert "Lyon" not in judge_prompt and "Paris, France." in judge_prompt
    lyon = next(c for c in result.candidates if c.member == "scripted/c")
    assert lyon.status == "rejected" and lyon.checks[0].detail == "says Lyon"
    assert any(f.member == "scripted/c" and f.status == "rejected" for f in result.failed_models)
    assert [e.member for e in events if e.type == "candidate_checked"] == [
        "scripted/a",
        "scripted/b",
        "scripted/c",
    ]


async def test_no_survivors_is_its_own_error_with_the_candidates(pool3):
    from polyfuse.errors import NoSurvivorsError

    for name in "abc":
        pool3[name].default = "Lyon"
    with pytest.raises(NoSurvivorsError) as info:
        await fuse(req(), scripted_hub(pool3), screen=_reject_lyon())
    assert [c.status for c in info.value.candidates] == ["rejected"] * 3
    assert pool3["judge"].calls == []


async def test_best_of_with_one_answer_left_skips_the_judge(pool3):
    pool3["b"].default = Reply(error=UpstreamError("down"))
    pool3["c"].default = Reply(error=UpstreamError("down"))
    result = await fuse(req(), scripted_hub(pool3))
    assert pool3["judge"].calls == [] and result.verdict.skipped
    assert result.answer == "Paris" and result.verdict.choice == "scripted/a"


async def test_client_stop_sequences_cut_the_written_answer_even_while_streaming(pool3):
    pool3["judge"].default = Reply(text=write_json("Paris is big. And old."), chunks=17)
    events = []
    result = await fuse(
        req("merge", params=GenerationParams(stop=[". A"])), scripted_hub(pool3), on_event=events.append
    )
    assert result.answer == "Paris is big"
    assert "".join(e.text for e in events if e.type == "answer_delta") == "Paris is big"
    assert pool3["judge"].calls[0][1].stop is None  # never sent to the judge: it would cut its JSON


async def test_client_response_format_shapes_the_written_answer(pool3):
    import json as _json

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    pool3["judge"].default = Reply(
        text=_json.dumps({"agreement": 0.5, "answer": {"city": "Paris"}, "scores": {}}), chunks=5
    )
    events = []
    request = req("merge", params=GenerationParams(json_schema=schema))
    result = await fuse(request, scripted_hub(pool3), on_event=events.append)
    assert _json.loads(result.answer) == {"city": "Paris"}
    assert pool3["judge"].calls[0][1].json_schema["properties"]["answer"] == schema
    assert [e.text for e in events if e.type == "answer_delta"] == [result.answer]  # whole, once
    pool3["judge"].default = Reply(text=_json.dumps({"answer": "not json at all"}))
    fallback = await fuse(request, scripted_hub(pool3))
    assert fallback.verdict.judge_failed and "must be JSON" in fallback.verdict.failure_reason


def test_stop_cutter_holds_back_a_possible_stop_across_chunks():
    from polyfuse.fusion.stopcut import StopCutter

    cutter = StopCutter(["END", "\n\n"])
    out = [cutter.feed(p) for p in ["ab", "cE", "N", "D more"]]
    assert "".join(out) + cutter.flush() == "abc"
    cutter = StopCutter(["END"])
    assert "".join(cutter.feed(p) for p in ["EN", "x"]) + cutter.flush() == "ENx"
