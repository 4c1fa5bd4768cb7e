"""Writing guarded by choosing: merge and debate return the chosen candidate when the written short answer
does not agree with it (``writer_rejected``), keep a written answer that does, and keep long-form syntheses."""

from __future__ import annotations

import pytest

from conftest import write_json
from polyfuse import FusionRequest, fuse
from polyfuse.fusion.guard import agrees, claim_of
from polyfuse.testing import Reply, ScriptedModel, scripted_hub
from polyfuse.testing.scripted import prefer
from polyfuse.types import Check

WRONG = ["Lyon", "Marseille"]


def models_with(right_at: int, written: str, texts: list[str] | None = None) -> dict[str, ScriptedModel]:
    answers = texts or [*WRONG[:right_at], "Paris", *WRONG[right_at:]][:3]
    models = {n: ScriptedModel(n, default=t) for n, t in zip("abc", answers, strict=True)}
    # the judge: prefers Paris by token probabilities, then writes `written`
    models["judge"] = ScriptedModel(
        "judge", default=Reply(text=write_json(written), chunks=4), scores=prefer("Paris")
    )
    return models


def req(mode: str = "merge", **kw) -> FusionRequest:
    return FusionRequest.from_prompt(
        "Capital of France?", "scripted/a,scripted/b,scripted/c", judge="scripted/judge", mode=mode,
        judge_method="label", rounds=1, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["merge", "debate"])
@pytest.mark.parametrize("right", [0, 1, 2])
async def test_a_writer_contradicting_every_candidate_is_rejected_for_the_chosen_one(mode, right):
    models = models_with(right, "Berlin")
    events = []
    result = await fuse(req(mode), scripted_hub(models), on_event=events.append)
    v = result.verdict
    assert result.answer == "Paris" and v.choice == f"scripted/{'abc'[right]}"
    assert v.writer_rejected and v.rejected_answer == "Berlin"
    assert any("contradicts every candidate" in n for n in v.notes)
    # what streamed was withdrawn, then the chosen answer went out whole
    reset = max(i for i, e in enumerate(events) if e.type == "answer_reset")
    assert "".join(e.text for e in events[reset:] if e.type == "answer_delta") == "Paris"


@pytest.mark.parametrize("right", [0, 2])
async def test_a_writer_siding_with_an_answer_the_judge_did_not_choose_is_rejected(right):
    models = models_with(right, "Lyon")
    result = await fuse(req(), scripted_hub(models))
    assert result.answer == "Paris" and result.verdict.writer_rejected
    assert any("sides with scripted/" in n for n in result.verdict.notes)


@pytest.mark.parametrize("right", [0, 1, 2])
async def test_a_writer_agreeing_with_the_chosen_answer_keeps_its_wording(right):
    models = models_with(right, "The capital of France is Paris.")
    result = await fuse(req(), scripted_hub(models))
    assert result.answer == "The capital of France is Paris."
    assert not result.verdict.writer_rejected and result.verdict.choice == f"scripted/{'abc'[right]}"


async def test_numbers_and_letters_are_compared_as_such():
    models = models_with(
        1, "So the answer is 48.", texts=["12 x 3 = 36", "4 boxes of 12 eggs make 48 eggs.", "50"]
    )
    models["judge"].scores = prefer("48")
    result = await fuse(req(), scripted_hub(models))
    assert result.answer == "So the answer is 48." and not result.verdict.writer_rejected
    assert agrees(claim_of("B) Mars"), claim_of("The answer is B"))
    assert not agrees(claim_of("B"), claim_of("C"))
    assert claim_of("A spider has eight legs.").kind == "phrase"


async def test_long_form_answers_keep_the_synthesis():
    long_a = "Paris is the capital. " + "It has many museums and a long history on the Seine. " * 5
    long_b = "Lyon is a large city. " + "It is known for food, silk and its old town by two rivers. " * 5
    synthesis = "France's capital is Paris; " + "the answers differ on details of cities and rivers. " * 5
    models = models_with(0, synthesis, texts=[long_a, long_b, long_a])
    result = await fuse(req(), scripted_hub(models))
    assert result.answer == synthesis.strip() and not result.verdict.writer_rejected


async def test_written_code_that_fails_the_checks_is_rejected():
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a - b\n```"

    async def screen(cands):
        out = []
        for c in cands:
            passed = "a + b" in c.text
            check = Check(name="tests", passed=passed, detail="" if passed else "add(2, 3) != 5")
            out.append(c.model_copy(update={"checks": [check], "status": "ok" if passed else "rejected"}))
        return out

    for written, rejected in ((bad, True), (good.replace("a + b", "b + a + 0"), True), (good + "\n", False)):
        models = models_with(0, written, texts=[bad.replace("-", "*"), good, "```python\nx = 1\n```"])
        models["judge"].scores = prefer("a + b")
        result = await fuse(req(), scripted_hub(models), screen=screen)
        assert result.verdict.writer_rejected is rejected, written
        assert result.answer == (good if rejected else written.strip())
        if rejected:
            assert any("fails its checks" in n for n in result.verdict.notes)


@pytest.mark.parametrize("right", [0, 2])
async def test_a_short_chosen_answer_is_not_rewritten_into_a_long_one_that_drops_it(right):
    rambling = (
        "L'Étoile, la Cité, le Poulet (The City of Love) is the capital of France, a city of art and song."
    )
    texts = [rambling, rambling.replace("France", "Gaul")]
    texts.insert(right, "Paris")
    echo = "your final answer to the request, keeping what is correct in the answers and fixing what is wrong"
    models = models_with(right, echo, texts=texts)
    result = await fuse(req(), scripted_hub(models))
    assert result.answer == "Paris" and result.verdict.writer_rejected  # the writer echoed its instructions
    long_right = (
        "The capital of France is Paris, on the Seine, which is also where the government of France sits."
    )
    models = models_with(right, long_right, texts=texts)
    result = await fuse(req(), scripted_hub(models))
    assert result.answer == long_right and not result.verdict.writer_rejected  # said at length, still Paris


@pytest.mark.parametrize("right", [0, 1])
async def test_debate_keeps_a_first_answer_that_revision_talked_its_member_out_of(right):
    """Both members give in to the wrong answer in round 1; the judge still sees the right first answer."""
    names = "ab"
    first = ["Lyon", "Lyon"]
    first[right] = "Paris"
    models = {n: ScriptedModel(n, replies=[first[i]], default="Lyon") for i, n in enumerate(names)}
    models["judge"] = ScriptedModel("judge", default=Reply(text=write_json("Paris")), scores=prefer("Paris"))
    request = FusionRequest.from_prompt(
        "Capital of France?", "scripted/a,scripted/b", judge="scripted/judge", mode="debate", rounds=1,
        judge_method="label",
    )  # fmt: skip
    result = await fuse(request, scripted_hub(models))
    assert [c.text for c in result.rounds[1]] == ["Lyon", "Lyon"]  # the revision went wrong
    assert result.answer == "Paris" and not result.verdict.writer_rejected
    assert result.verdict.choice == f"scripted/{names[right]}@round0"
    assert {c.member for c in result.candidates} == {
        "scripted/a",
        "scripted/b",
        f"scripted/{names[right]}@round0",
    }
    # the run log marks the first-round call the judge chose; the metrics count each model call once
    from polyfuse.gateway.metrics import Metrics, sum_samples
    from polyfuse.store.records import build_record

    record = build_record(request, result, source="cli")
    chosen = [(c.model, c.round) for c in record.candidates if c.chosen]
    assert chosen == [(f"scripted/{names[right]}", 0)]
    metrics = Metrics()
    metrics.fusion(result, "k", "t")
    calls = sum_samples(metrics.render().decode(), "polyfuse_member_duration_seconds_count")
    assert calls == len(result.rounds[0]) + len(result.rounds[1]) == 4
