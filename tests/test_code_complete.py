"""complete: per-model prompts, checks before the judge, the fast path; scripted for exact behaviour."""

from __future__ import annotations

import pytest

from codehelp import make_env
from conftest import picker
from polyfuse.code.complete import complete
from polyfuse.errors import InvalidRequestError, NoSurvivorsError
from polyfuse.testing import Reply, ScriptedModel

SOURCE = (
    'def add(a, b):\n    """Add two numbers.\n\n    >>> add(2, 3)\n    5\n    """\n    \n\nprint("done")\n'
)


def _write(tmp_path, text=SOURCE):
    (tmp_path / ".git").mkdir()
    f = tmp_path / "mathx.py"
    f.write_text(text)
    return f


async def test_syntax_error_and_failing_examples_are_eliminated_before_the_judge(tmp_path):
    f = _write(tmp_path)
    models = {
        "broken": ScriptedModel("broken", default="```python\nreturn a +* b\n```"),
        "wrong": ScriptedModel("wrong", default="```python\nreturn a - b\n```"),
        "right": ScriptedModel("right", default="```python\nreturn a + b\n```"),
        "also": ScriptedModel("also", default="```python\nreturn b + a\n```"),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("a + b"))),
    }
    env = make_env(models, ["broken", "wrong", "right", "also"])
    result = await complete(env, f, 7, 5)
    assert result.insertion == "return a + b"
    cands = {c.member: c for c in result.fusion.candidates}
    assert cands["scripted/broken"].status == "rejected"
    assert (
        cands["scripted/broken"].checks[0].name == "parses" and not cands["scripted/broken"].checks[0].passed
    )
    assert cands["scripted/wrong"].status == "rejected"
    assert cands["scripted/wrong"].checks[-1].name == "examples"
    assert "0/1 examples passed" in cands["scripted/wrong"].checks[-1].detail
    assert cands["scripted/right"].ok and [k.name for k in cands["scripted/right"].checks] == [
        "parses",
        "examples",
    ]
    judge_prompt = models["judge"].calls[0][0][-1].content
    assert "a + b" in judge_prompt and "b + a" in judge_prompt
    assert "a - b" not in judge_prompt and "+* b" not in judge_prompt
    assert f.read_text() == SOURCE  # completion never writes


async def test_chat_members_get_the_hole_filling_prompt(tmp_path):
    f = _write(tmp_path)
    models = {
        "a": ScriptedModel("a", default="return a + b"),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("a + b"))),
    }
    env = make_env(models, ["a"])
    await complete(env, f, 7, 5)
    sent = models["a"].calls[0][0][-1].content
    assert "<FILL_HERE>" in sent and 'print("done")' in sent and "def add(a, b):" in sent


async def test_no_survivors_carries_the_candidates_and_the_best_failing_one(tmp_path):
    f = _write(tmp_path)
    models = {
        "broken": ScriptedModel("broken", default="return a +* b"),
        "wrong": ScriptedModel("wrong", default="return a - b"),
        "judge": ScriptedModel("judge", default="{}"),
    }
    env = make_env(models, ["broken", "wrong"])
    with pytest.raises(NoSurvivorsError) as info:
        await complete(env, f, 7, 5)
    from polyfuse.code.checks import best_failing, describe_no_survivors

    best = best_failing(info.value.candidates, info.value.scores)
    assert best.member == "scripted/wrong"  # it parsed; the other did not
    text = describe_no_survivors(info.value, info.value.scores)
    assert "best failing candidate (scripted/wrong" in text and "examples" in text
    assert models["judge"].calls == []  # the judge never ran


async def test_fast_path_returns_the_first_good_candidate_and_refines_later(tmp_path):
    f = _write(tmp_path)
    models = {
        "quick": ScriptedModel("quick", default="return a + b"),
        "slow": ScriptedModel("slow", default=Reply(text="return b + a", delay=3)),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("b + a"))),
    }
    env = make_env(models, ["quick", "slow"], latency_budget=2.5)
    result = await complete(env, f, 7, 5, fast=True)
    assert result.fast and result.insertion == "return a + b" and result.fusion is None
    refined = await result.refined
    assert refined.insertion == "return b + a" and refined.fusion.verdict.choice == "scripted/slow"


@pytest.mark.parametrize(
    "line, col, message", [(99, 1, "line 99 is outside"), (1, 80, "column 80 is outside")]
)
async def test_cursor_outside_the_file_is_a_user_error(tmp_path, line, col, message):
    f = _write(tmp_path)
    env = make_env({"a": ScriptedModel("a"), "judge": ScriptedModel("judge")}, ["a"])
    with pytest.raises(InvalidRequestError, match=message):
        await complete(env, f, line, col)


async def test_a_single_survivor_wins_without_a_judge_call(tmp_path):
    f = _write(tmp_path)
    models = {
        "wrong": ScriptedModel("wrong", default="return a * b"),
        "right": ScriptedModel("right", default="return a + b"),
        "judge": ScriptedModel("judge", default="{}"),
    }
    result = await complete(make_env(models, ["wrong", "right"]), f, 7, 5)
    assert result.insertion == "return a + b" and result.fusion.verdict.skipped
    assert models["judge"].calls == []


def test_a_completion_typed_after_the_indentation_is_not_indented_twice():
    from polyfuse.code.fim import FimTask, clean_completion

    task = FimTask("def add(a, b):\n    ", "\n", "m.py", "python", "")
    assert (
        clean_completion("    return a + b\n    # done", task, from_chat=False) == "return a + b\n    # done"
    )
    assert clean_completion("```python\n    return a + b\n```", task, from_chat=True) == "return a + b"
    at_col_1 = FimTask("def add(a, b):\n", "\n", "m.py", "python", "")
    assert clean_completion("    return a + b", at_col_1, from_chat=False) == "    return a + b"


def test_a_restated_function_with_other_parameter_names_keeps_only_its_body():
    from polyfuse.code.fim import FimTask, clean_completion

    task = FimTask('def trunc(number: float) -> float:\n    """Decimal part."""\n', "", "m.py", "python", "")
    answer = "```python\ndef trunc(num: float) -> float:\n    return num % 1.0\n```"
    assert clean_completion(answer, task, from_chat=True) == "    return num % 1.0"


def test_the_prompt_window_keeps_its_start_while_the_user_types():
    from polyfuse.code.complete import prompt_window

    text = "".join(f"line{i}\n" for i in range(200))
    cursor = text.index("line130")
    before, after = prompt_window(text[:cursor], text[cursor:], 60, 5)
    assert before.startswith("line60\n") and after == "line130\nline131\nline132\nline133\nline134\nline135"
    typed, _ = prompt_window(text[:cursor] + "x = 1\n    y", text[cursor:], 60, 5)
    assert typed.startswith("line60\n")  # two lines more, same start: the KV cache stays valid
    far, _ = prompt_window(text[: text.index("line150")], "", 60, 5)
    assert far.startswith("line80\n")  # it moves in steps of 20 lines
    assert prompt_window("a\nb", "c", 60, 5) == ("a\nb", "c")
