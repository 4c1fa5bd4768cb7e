"""``polyfuse code`` in a subprocess: bad input is one line and exit 2 with nothing written; each task end to end
on the bundled local models (asserting structure and the checks' evidence, not model brilliance)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reviewkit import sarif_errors

POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main", "code"]
ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


def run(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POLYFUSE, *args], cwd=cwd, input=input, capture_output=True, text=True, env=ENV, timeout=900
    )


@pytest.fixture
def project(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "m.py").write_text("def f(x):\n    return x\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["complete", "nope.py", "--line", "1", "--col", "1"], "file nope.py does not exist"),
        (["complete", "m.py", "--line", "40", "--col", "1"], "line 40 is outside m.py"),
        (["complete", "blob.bin", "--line", "1", "--col", "1"], "blob.bin is a binary file"),
        (["transform", "m.py", "add types", "--range", "5:9"], "range 5:9 is outside m.py"),
        (["transform", "m.py", "add types", "--range", "x"], "--range must be START:END"),
        (["transform", "missing.py", "add types"], "file missing.py does not exist"),
        (["transform", "m.py", "add types", "--apply", "--range", "0:1"], "range 0:1 is outside"),
        (
            ["debug", "--cmd", "definitely-not-a-command-xyz --flag"],
            "command not found: definitely-not-a-command-xyz",
        ),
        (["tests", "m.py", "--function", "ghost"], "no function or class 'ghost'"),
        (["generate", "  "], "the description is empty"),
        (["complete", "m.py", "--line", "1", "--col", "1", "--pool", "nope/x"], "unknown provider prefix"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(project, args, message):
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    proc = run(*args, cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before


def test_review_outside_a_git_repository_is_exit_2(tmp_path):
    proc = run("review", "--root", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "is not a git repository" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_review_with_an_unknown_base_is_exit_2(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    proc = run("review", "--base", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown base 'nope'" in proc.stderr


LOCAL = ["--preset", "local"]


@pytest.mark.local
def test_complete_on_the_bundled_models_reports_each_candidates_checks(project):
    (project / "mathx.py").write_text(
        'def add(a, b):\n    """Add.\n\n    >>> add(2, 3)\n    5\n    """\n    \n'
    )
    proc = run("complete", "mathx.py", "--line", "7", "--col", "5", *LOCAL, cwd=project)
    assert "local/smollm2-135m" in proc.stderr and "local/gemma3-270m" in proc.stderr  # each one's checks
    if proc.returncode == 0:
        assert "checks:" in proc.stderr
        assert proc.stdout.strip() and "examples ok (1/1 examples passed)" in proc.stderr
    else:  # nothing passed: the user is told, with the best failing candidate
        assert proc.returncode == 1 and "no candidate passed the checks" in proc.stderr
        assert "best failing candidate" in proc.stderr


@pytest.mark.local
@pytest.mark.parametrize(
    "args",
    [
        ["generate", "a function is_even(n) that returns True for even numbers"],
        ["transform", "m.py", "add a docstring to f", "--apply"],
        ["tests", "m.py"],
        ["debug", "--cmd", "python check.py", "--verify"],
    ],
)
def test_tasks_on_the_bundled_models_end_to_end(project, args):
    (project / "check.py").write_text("from m import f\nassert f(2) == 4\n")
    original = (project / "m.py").read_text()
    proc = run(*args, *LOCAL, cwd=project)
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:
        assert "checks:" in proc.stderr and "[ok]" in proc.stderr
        assert proc.stdout.strip()
    else:  # every candidate failed its checks: said so with the evidence, and nothing was written
        assert proc.returncode == 1, proc.stderr
        assert "no candidate passed the checks" in proc.stderr and "best failing candidate" in proc.stderr
        assert (project / "m.py").read_text() == original
    if args[0] == "transform" and proc.returncode == 0:
        assert (project / "m.py").read_text() != original and proc.stdout.startswith("--- a/m.py")


@pytest.mark.local
def test_review_on_the_bundled_models_gives_valid_sarif(tmp_path):
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "app.py").write_text("def f(x):\n    return x\n")
    git("add", ".")
    git("commit", "-qm", "base")
    (tmp_path / "app.py").write_text("import os\n\ndef f(x):\n    return eval(x)\n")
    proc = run("review", "--format", "sarif", *LOCAL, cwd=tmp_path)
    import json

    if proc.returncode == 0:
        sarif = json.loads(proc.stdout)
        assert sarif["version"] == "2.1.0" and sarif_errors(proc.stdout) == []
        for r in sarif["runs"][0]["results"]:
            assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "app.py"
    else:
        assert proc.returncode == 1 and "no candidate passed the checks" in proc.stderr


REFUSED = [
    ["generate", "add two numbers"],
    ["complete", "m.py", "--line", "2", "--col", "5"],
    ["transform", "m.py", "add types"],
    ["tests", "m.py"],
    ["debug", "--cmd", "python m.py"],
]


@pytest.mark.parametrize("args", REFUSED, ids=[a[0] for a in REFUSED])
def test_without_an_adequate_sandbox_candidates_are_not_run(project, args):
    no_bwrap = {**ENV, "PATH": str(project / "empty-bin")}  # bwrap cannot be found
    proc = subprocess.run(
        [*POLYFUSE, *args, *LOCAL], cwd=project, env=no_bwrap, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "bwrap is not installed" in proc.stderr and "[code] allow_weak_sandbox = true" in proc.stderr


def test_the_checks_evidence_says_which_sandbox_ran_and_the_weak_one_needs_the_opt_in(project):
    from polyfuse.testing.upstream import Behaviour, FakeUpstream

    answer = "```python\ndef add(a, b):\n    return a + b\n```"
    (project / "test_add.py").write_text(
        "from solution import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    with FakeUpstream({"coder": Behaviour(text=answer, latency=0.05)}) as up:
        config = f'[providers.fake]\nbase_url = "{up.base_url}"\nmax_retries = 0\n[log]\nenabled = false\n'
        args = [*POLYFUSE, "generate", "add two numbers", "--tests", "test_add.py", "--pool", "fake/coder"]
        for path, extra, sandbox in (
            (ENV["PATH"], "", "bwrap"),
            (str(project / "empty-bin"), "[code]\nallow_weak_sandbox = true\n", "landlock (weak)"),
        ):
            (project / "polyfuse.toml").write_text(config + extra)
            env = {**ENV, "PATH": path}
            proc = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            assert "def add(a, b)" in proc.stdout
            assert f"checks: (code ran in {sandbox})" in proc.stderr and "tests ok (1 passed)" in proc.stderr
