"""generate, transform, debug, review, tests: exact behaviour with scripted models; edits, redaction, context."""

from __future__ import annotations

import json
import subprocess

import pytest

from codehelp import make_env
from conftest import picker
from polyfuse.code.context import gather_context
from polyfuse.code.debug import debug
from polyfuse.code.edits import EditError, apply_edits, parse_edits
from polyfuse.code.generate import generate
from polyfuse.code.redact import Redactor
from polyfuse.code.review import review
from polyfuse.code.review_format import to_sarif, to_text
from polyfuse.code.testgen import generate_tests
from polyfuse.code.transform import transform
from polyfuse.errors import NoSurvivorsError
from polyfuse.testing import Reply, ScriptedModel

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def block(path: str, search: str, replace: str, note: str = "") -> str:
    return f"{note}\n{path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_edits_apply_tolerantly_of_whitespace_and_reindent():
    content = "def f(x):\n    if x:\n        return 1\n    return 0\n"
    edits = parse_edits(block("f.py", "if x:   \n    return 1", "if x > 0:\n    return 2"))
    assert apply_edits(content, edits) == "def f(x):\n    if x > 0:\n        return 2\n    return 0\n"
    diff = "--- a/f.py\n+++ b/f.py\n@@ -9,2 +9,2 @@\n def f(x):\n-    if x:\n+    if x is not None:\n"
    assert "if x is not None:" in apply_edits(content, parse_edits(diff))


@pytest.mark.parametrize("search", ["return 7", "    return"])
def test_edits_that_match_nowhere_or_twice_fail(search):
    content = "def f(x):\n    if x:\n        return 1\n    return 0\n"
    with pytest.raises(EditError):
        apply_edits(content, parse_edits(block("f.py", search, "pass")))


def test_redaction_is_consistent_reported_and_restorable():
    r = Redactor()
    text = f'OPENAI = "{KEY}"\npassword = "hunter22"\nkey2 = "{KEY}"\n-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----\n'
    out = r.redact(text, "settings.py")
    assert KEY not in out and "hunter22" not in out and "abc" not in out
    assert out.count("[REDACTED-2:openai-key]") == 2 and "[REDACTED-1:private-key]" in out
    assert {x.kind for x in r.found} >= {"openai-key", "assigned-secret", "private-key"}
    assert "openai-key in settings.py:1" in r.report()
    assert r.restore(out) == text


def test_context_follows_imports_and_symbols_and_honours_ignore_files(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / ".aiexclude").write_text("secret_*.py\n")
    (tmp_path / "helpers.py").write_text("def helper():\n    return 1\n")
    (tmp_path / "tools.py").write_text("def frobnicate():\n    return 2\n")
    (tmp_path / "user.py").write_text("import main\n")
    (tmp_path / "secret_keys.py").write_text("def frobnicate_secret():\n    pass\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "frob.py").write_text("def frobnicate():\n    pass\n")
    main = tmp_path / "main.py"
    main.write_text("from helpers import helper\n\nfrobnicate()\n")
    ctx = gather_context(tmp_path, current=main, named=[tmp_path / "secret_keys.py"], budget_tokens=1000)
    reasons = {f.path: f.reason for f in ctx.files}
    assert reasons["helpers.py"] == "imported by this file"
    assert reasons["user.py"] == "imports this file"
    assert reasons["tools.py"].startswith("defines frobnicate")
    assert "build/frob.py" not in reasons and "secret_keys.py" not in reasons
    assert ctx.excluded == ["secret_keys.py"]
    small = gather_context(tmp_path, current=main, budget_tokens=60)
    assert small.tokens <= 60 + 20


def _repo(tmp_path):
    (tmp_path / ".git").mkdir()
    return tmp_path


async def test_transform_rejects_an_edit_that_does_not_apply_and_leaves_the_file(tmp_path):
    f = _repo(tmp_path) / "calc.py"
    original = "def double(x):\n    return x + x\n"
    f.write_text(original)
    models = {
        "bad": ScriptedModel("bad", default=block("calc.py", "return x * 3", "return 2 * x")),
        "judge": ScriptedModel("judge", default="{}"),
    }
    with pytest.raises(NoSurvivorsError) as info:
        await transform(make_env(models, ["bad"]), f, "simplify", apply=True)
    assert info.value.candidates[0].checks[0].name == "applies"
    assert f.read_text() == original


async def test_transform_with_a_range_rejects_edits_outside_it(tmp_path):
    f = _repo(tmp_path) / "calc.py"
    original = "def double(x):\n    return x + x\n\n\ndef triple(x):\n    return x + x + x\n"
    f.write_text(original)
    models = {
        "outside": ScriptedModel("outside", default=block("calc.py", "return x + x + x", "return 3 * x")),
        "inside": ScriptedModel(
            "inside", default=block("calc.py", "    return x + x\n", "    return 2 * x\n")
        ),
        "judge": ScriptedModel("judge", default="{}"),
    }
    result = await transform(make_env(models, ["outside", "inside"]), f, "simplify", line_range=(1, 2))
    by_member = {c.member: c for c in result.fusion.candidates}
    stray = by_member["scripted/outside"]
    assert stray.status == "rejected" and "outside the lines 1-2" in stray.checks[0].detail
    assert "return 2 * x" in result.new_text and "return x + x + x" in result.new_text
    assert f.read_text() == original  # not applied without apply=True


async def test_transform_applies_the_surviving_edit_atomically(tmp_path):
    f = _repo(tmp_path) / "calc.py"
    f.write_text("def double(x):\n    return x + x\n")
    models = {
        "bad": ScriptedModel("bad", default=block("calc.py", "    return x + x", "    return (x")),
        "good": ScriptedModel("good", default=block("calc.py", "    return x + x", "    return 2 * x")),
        "judge": ScriptedModel("judge", default="{}"),
    }
    result = await transform(make_env(models, ["bad", "good"]), f, "simplify", line_range=(2, 2), apply=True)
    assert result.applied and f.read_text() == "def double(x):\n    return 2 * x\n"
    assert "-    return x + x\n+    return 2 * x" in result.diff
    bad = next(c for c in result.fusion.candidates if c.member == "scripted/bad")
    assert bad.status == "rejected" and bad.checks[-1].name == "parses"


async def test_secret_in_context_never_reaches_a_remote_provider(tmp_path):
    root = _repo(tmp_path)
    (root / "config.py").write_text(f'API_KEY = "{KEY}"\nTIMEOUT = 5\n')
    f = root / "app.py"
    f.write_text("from config import API_KEY, TIMEOUT\n\ndef wait():\n    return TIMEOUT\n")
    models = {
        "a": ScriptedModel("a", default=block("app.py", "    return TIMEOUT", "    return TIMEOUT * 2")),
        "judge": ScriptedModel("judge", default="{}"),
    }
    result = await transform(make_env(models, ["a"]), f, "double the wait")
    sent = json.dumps([m.content for call in models["a"].calls for m in call[0]])
    assert "config.py" in sent and KEY not in sent and "[REDACTED-1:openai-key]" in sent
    assert "openai-key in config.py:1" in result.redactions


async def test_generate_prefers_the_candidate_that_passes_its_docstring_examples(tmp_path):
    good = '```python\ndef square(n):\n    """\n    >>> square(3)\n    9\n    """\n    return n * n\n```'
    bad = '```python\ndef square(n):\n    """\n    >>> square(3)\n    9\n    """\n    return n + n\n```'
    models = {
        "good": ScriptedModel("good", default=good),
        "bad": ScriptedModel("bad", default=bad),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("n + n"))),
    }
    result = await generate(make_env(models, ["bad", "good"]), "square a number")
    assert "n * n" in result.code
    checks = {c.member: c.checks for c in result.fusion.candidates}
    assert checks["scripted/bad"][-1].detail.startswith("0/1 examples passed")
    assert models["judge"].calls == []  # the only survivor needs no ranking


async def test_generate_runs_the_given_tests_and_stops_an_infinite_loop(tmp_path):
    tests = tmp_path / "test_it.py"
    tests.write_text("from solution import inc\n\ndef test_inc():\n    assert inc(1) == 2\n")
    loop = "```python\ndef inc(n):\n    while True:\n        pass\n```"
    escape = f"```python\nopen({str(tmp_path / 'escaped.txt')!r}, 'w').write('x')\ndef inc(n):\n    return n + 1\n```"
    right = "```python\ndef inc(n):\n    return n + 1\n```"
    models = {
        "loop": ScriptedModel("loop", default=loop),
        "escape": ScriptedModel("escape", default=escape),
        "right": ScriptedModel("right", default=right),
        "judge": ScriptedModel("judge", default="{}"),
    }
    env = make_env(models, ["loop", "escape", "right"], sandbox_timeout=12)
    result = await generate(env, "increment", tests=tests)
    cands = {c.member: c for c in result.fusion.candidates}
    loop_error = cands["scripted/loop"].error
    assert cands["scripted/loop"].status == "rejected"
    assert "timed out" in loop_error or "SIGXCPU" in loop_error or "SIGKILL" in loop_error
    assert cands["scripted/escape"].status == "rejected" and not (tmp_path / "escaped.txt").exists()
    assert result.code.strip().endswith("return n + 1") and cands["scripted/right"].checks[-1].passed


async def test_generated_tests_must_pass_against_the_code(tmp_path):
    f = _repo(tmp_path) / "shapes.py"
    f.write_text("def area(w, h):\n    return w * h\n")
    wrong = "```python\nfrom shapes import area\n\ndef test_area():\n    assert area(2, 3) == 5\n```"
    right = "```python\nfrom shapes import area\n\ndef test_area():\n    assert area(2, 3) == 6\n```"
    models = {
        "w": ScriptedModel("w", default=wrong),
        "r": ScriptedModel("r", default=right),
        "judge": ScriptedModel("judge", default="{}"),
    }
    result = await generate_tests(make_env(models, ["w", "r"]), f, function="area")
    assert "== 6" in result.code and result.test_path.endswith("test_shapes.py")
    assert {c.member: c.status for c in result.fusion.candidates} == {
        "scripted/w": "rejected",
        "scripted/r": "ok",
    }


async def test_debug_verifies_each_fix_by_rerunning_the_command(tmp_path):
    root = _repo(tmp_path)
    (root / "lib.py").write_text("def half(x):\n    return x // 3\n")
    (root / "check.py").write_text("from lib import half\nassert half(8) == 4, half(8)\nprint('ok')\n")
    wrong = block("lib.py", "    return x // 3", "    return x // 4", "Off by one.")
    right = block("lib.py", "    return x // 3", "    return x // 2", "half divides by 3 instead of 2.")
    models = {
        "w": ScriptedModel("w", default=wrong),
        "r": ScriptedModel("r", default=right),
        "judge": ScriptedModel("judge", default="{}"),
    }
    result = await debug(make_env(models, ["w", "r"]), root=root, cmd="python check.py", verify=True)
    assert result.run is not None and not result.run.ok and "AssertionError" in result.run.stderr
    assert result.verified and "x // 2" in result.diff and "divides by 3" in result.explanation
    w = next(c for c in result.fusion.candidates if c.member == "scripted/w")
    assert w.status == "rejected" and w.checks[-1].name == "command passes"
    assert (root / "lib.py").read_text().endswith("x // 3\n")  # the project itself is untouched
    prompt = models["r"].calls[0][0][-1].content
    assert "lib.py" in prompt and "AssertionError" in prompt


def _git_repo(tmp_path):
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("config", "user.email", "t@example.com")
    run("config", "user.name", "t")
    (tmp_path / "app.py").write_text("def f(x):\n    return x\n")
    run("add", ".")
    run("commit", "-qm", "base")
    (tmp_path / "app.py").write_text("def f(x):\n    return eval(x)\n\n\ndef g(y):\n    return y\n")
    (tmp_path / ".polyfuse").mkdir()
    (tmp_path / ".polyfuse" / "styleguide.md").write_text("Never use eval.\n")
    return tmp_path


def _comments(*items):
    return json.dumps(
        {
            "comments": [
                dict(zip(["file", "line", "severity", "category", "message", "suggestion"], it, strict=True))
                for it in items
            ]
        }
    )


async def test_review_merges_comments_notes_disagreement_and_filters_by_severity(tmp_path):
    root = _git_repo(tmp_path)
    a = _comments(
        ("app.py", 2, "critical", "security", "eval on input", "use int(x)"),
        ("app.py", 6, "low", "maintainability", "g is unused", ""),
    )
    b = _comments(
        ("app.py", 2, "high", "security", "eval is dangerous", "parse instead"),
        ("app.py", 400, "low", "correctness", "made up", ""),
    )
    models = {
        "a": ScriptedModel("a", default=a),
        "b": ScriptedModel("b", default=b),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("eval on input"))),
    }
    result = await review(make_env(models, ["a", "b"]), root, base="main")
    assert "Never use eval" in models["a"].calls[0][0][-1].content
    by_line = {c.line: c for c in result.comments}
    assert set(by_line) == {2, 6}  # line 400 is not in the diff
    assert by_line[2].severity == "critical" and by_line[2].raised_by == ["scripted/a", "scripted/b"]
    assert "disagree on severity" in by_line[2].disagreement
    assert "raised by 1 of 2 reviewers" in by_line[6].disagreement
    assert "app.py:2: [critical] security" in to_text(result)
    sarif = json.loads(to_sarif(result))
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"][0]["level"] == "error"
    models["a"].queue(a)
    models["b"].queue(b)
    high = await review(make_env(models, ["a", "b"]), root, base="main", min_severity="high")
    assert [c.line for c in high.comments] == [2] and high.filtered == 1
