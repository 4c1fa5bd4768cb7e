"""Consensus-gated review with scripted reviewers: the min_agreement bar and disputed comments, the gates of
.polyfuse/review.toml (and options over it), and SARIF that validates against the SARIF 2.1.0 schema."""

from __future__ import annotations

import json

import pytest

from codehelp import make_env
from conftest import picker
from polyfuse.code.review import review
from polyfuse.code.review_config import load_review_options
from polyfuse.code.review_format import to_json, to_sarif, to_text
from polyfuse.errors import ConfigError, InvalidRequestError
from polyfuse.testing import Reply, ScriptedModel
from reviewkit import EVAL, UNUSED, G, comments, git, repo, sarif_errors


def pool(a: str, b: str, c: str, needle: str = "eval") -> dict[str, ScriptedModel]:
    return {
        "a": ScriptedModel("a", default=a),
        "b": ScriptedModel("b", default=b),
        "c": ScriptedModel("c", default=c),
        "judge": ScriptedModel("judge", default=Reply(fn=picker(needle))),
    }


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "repo"
    repo(r)
    return r


# which issue the pool agrees on varies: the eval issue (line 4) or the unused import (line 1)
@pytest.mark.parametrize(
    "reviews, agreed, disputed",
    [
        (((EVAL, UNUSED), (EVAL, G), (EVAL,)), [4], [1, 8]),
        (((UNUSED, EVAL), (UNUSED,), (G, UNUSED)), [1], [4, 8]),
    ],
)
async def test_min_agreement_keeps_what_enough_reviewers_raised_and_reports_the_rest_apart(
    root, reviews, agreed, disputed
):
    models = pool(*(comments(*r) for r in reviews))
    options = load_review_options(root, min_agreement=2)
    result = await review(make_env(models, ["a", "b", "c"]), root, options=options)
    assert [c.line for c in result.comments] == agreed
    assert sorted(c.line for c in result.disputed) == disputed
    assert all(len(c.raised_by) == 1 for c in result.disputed) and len(result.comments[0].raised_by) >= 2
    text = to_text(result)
    assert "disputed (raised by fewer than 2 of 3 reviewers):" in text
    assert text.index(f"app.py:{agreed[0]}:") < text.index("disputed (")
    data = json.loads(to_json(result))
    assert [c["line"] for c in data["comments"]] == agreed and len(data["disputed"]) == 2

    hidden = await review(
        make_env(pool(*(comments(*r) for r in reviews)), ["a", "b", "c"]),
        root,
        options=options.merged(show_disputed=False),
    )
    text = to_text(hidden)
    assert "disputed (" not in text and "(2 disputed comments hidden (raised by fewer than 2 of 3" in text
    assert f"app.py:{disputed[0]}:" not in text  # hidden, but counted above: never silently dropped


async def test_review_toml_sets_the_gates_and_options_override_it(root):
    (root / "docs").mkdir()
    (root / "docs" / "notes.md").write_text("draft notes\n")
    (root / "STYLE.md").write_text("Prefer int() to eval().\n")
    (root / ".polyfuse").mkdir()
    (root / ".polyfuse" / "review.toml").write_text(
        'min_severity = "medium"\nmin_agreement = 2\nmax_comments = 1\nignore = ["docs/**"]\n'
        'styleguide = "STYLE.md"\nshow_disputed = false\n'
    )
    git(root, "add", ".")  # the new files are part of the change (diff against main includes them)
    low_too = ("app.py", 1, "medium", "maintainability", "os is imported but unused", "")
    models = pool(comments(EVAL, low_too, G), comments(EVAL, low_too, G), comments(EVAL, UNUSED))
    options = load_review_options(root)
    assert (options.min_severity, options.min_agreement, options.max_comments) == ("medium", 2, 1)
    result = await review(make_env(models, ["a", "b", "c"]), root, options=options)
    prompt = models["a"].calls[0][0][-1].content
    assert "Prefer int() to eval()." in prompt and "draft notes" not in prompt
    assert result.ignored == ["docs/notes.md"]
    # EVAL (3 reviewers) and the import (2, medium) and g (2, medium) pass; max 1 keeps the most severe
    assert [c.line for c in result.comments] == [4] and result.over_limit == 2
    assert (
        result.disputed == [] and result.filtered == 0
    )  # UNUSED (low) merged into the medium import comment
    text = to_text(result)
    assert "(2 more comments over the maximum of 1)" in text and "(1 files ignored: docs/notes.md)" in text

    overridden = load_review_options(root, min_agreement=3, max_comments=5, min_severity="low")
    again = await review(
        make_env(
            pool(comments(EVAL, low_too, G), comments(EVAL, low_too, G), comments(EVAL, UNUSED)),
            ["a", "b", "c"],
        ),
        root,
        options=overridden,
    )
    # the import was raised by all three (c rated it low): kept with eval; g, by two, is disputed now
    assert [c.line for c in again.comments] == [4, 1] and [c.line for c in again.disputed] == [8]


@pytest.mark.parametrize(
    "text, message",
    [
        ("min_agreemnt = 2\n", "min_agreemnt: Extra inputs are not permitted (known keys: min_severity"),
        ('min_severity = "urgent"\n', "min_severity: Input should be 'low', 'medium', 'high' or 'critical'"),
        ("min_agreement = 0\n", "min_agreement: Input should be greater than or equal to 1"),
        ("ignore = 'docs'\n", "ignore: Input should be a valid list"),
        ("min_agreement = \n", "invalid .polyfuse/review.toml: Invalid value"),
    ],
)
def test_an_invalid_review_toml_is_one_clear_config_error(tmp_path, text, message):
    (tmp_path / ".polyfuse").mkdir()
    (tmp_path / ".polyfuse" / "review.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_review_options(tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)


async def test_a_bar_above_the_pool_size_is_refused_before_any_model_call(root):
    models = pool(comments(EVAL), comments(EVAL), comments(EVAL))
    with pytest.raises(InvalidRequestError, match="min_agreement 4 is more than the 3 reviewers"):
        await review(
            make_env(models, ["a", "b", "c"]), root, options=load_review_options(root, min_agreement=4)
        )
    assert all(m.calls == [] for m in models.values())


@pytest.mark.parametrize("show_disputed", [True, False])
async def test_sarif_validates_against_the_sarif_2_1_0_schema(root, show_disputed):
    models = pool(comments(EVAL, UNUSED), comments(EVAL, G), comments(EVAL))
    options = load_review_options(root, min_agreement=2, show_disputed=show_disputed)
    result = await review(make_env(models, ["a", "b", "c"]), root, options=options)
    sarif = to_sarif(result)
    assert sarif_errors(sarif) == []
    results = json.loads(sarif)["runs"][0]["results"]
    suppressed = [r for r in results if r.get("suppressions")]
    assert len(results) == (3 if show_disputed else 1) and len(suppressed) == (2 if show_disputed else 0)
    assert all(r["suppressions"][0]["justification"].startswith("disputed:") for r in suppressed)
    # the validator is live: a result GitHub would reject fails it
    broken = json.loads(sarif)
    broken["runs"][0]["results"][0]["level"] = "fatal"
    assert any("'fatal' is not one of" in e for e in sarif_errors(json.dumps(broken)))


async def test_sarif_of_a_review_without_comments_validates(root):
    empty = comments()
    result = await review(make_env(pool(empty, empty, empty, needle="comments"), ["a", "b", "c"]), root)
    assert result.comments == [] and sarif_errors(to_sarif(result)) == []


@pytest.mark.parametrize("guide", ["/proc/self/environ", "../outside.md"])
async def test_a_style_guide_outside_the_repository_is_refused(root, guide):
    (root.parent / "outside.md").write_text("secret")
    (root / ".polyfuse").mkdir()
    (root / ".polyfuse" / "review.toml").write_text(f'styleguide = "{guide}"\n')
    models = pool(comments(EVAL), comments(EVAL), comments(EVAL))
    with pytest.raises(InvalidRequestError, match="is outside the repository"):
        await review(make_env(models, ["a", "b", "c"]), root)
    assert all(m.calls == [] for m in models.values())
