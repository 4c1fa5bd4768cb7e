"""``polyfuse eval`` as a real subprocess over a real HTTP upstream on loopback: output, bad input (exit 2),
and resume after the process is killed mid-run, which must give the same report as a run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polyfuse.testing.upstream import Behaviour, FakeUpstream
from ptyrun import run_in_pty

POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]
ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}

JUDGE = json.dumps(
    {
        "scores": {},
        "consensus": [],
        "contradictions": [],
        "agreement": 0.5,
        "choice": "A",
        "answer": "It is 4.",
    }
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POLYFUSE, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)


def _dataset(path: Path, n: int = 6) -> Path:
    lines = [
        json.dumps(
            {"id": f"q{i}", "prompt": f"Question {i}: 2 + {2 if i % 2 else 3}?", "answer": 4 if i % 2 else 5}
        )
        for i in range(1, n + 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def project(tmp_path):
    """A provider 'fake' whose model a always says 4, b always says 5, and a judge that picks label A."""
    with FakeUpstream(
        {
            "a": Behaviour(text="The answer is 4", latency=0.15, cost=0.001),
            "b": Behaviour(text="5", latency=0.15, cost=0.002),
            "judge": Behaviour(text=JUDGE, latency=0.15, cost=0.0005),
        }
    ) as up:
        (tmp_path / "polyfuse.toml").write_text(
            f'[providers.fake]\nbase_url = "{up.base_url}"\nmax_retries = 0\n[log]\nenabled = false\n'
        )
        _dataset(tmp_path / "sums.jsonl")
        yield tmp_path, up


ARGS = ["--pool", "fake/a,fake/b", "--judge", "fake/judge", "--modes", "single,best-of,merge,vote",
        "--scorer", "numeric", "--sc-k", "2"]  # fmt: skip


def test_eval_prints_a_table_and_writes_json_and_html(project):
    cwd, _ = project
    proc = run("eval", "sums.jsonl", *ARGS, "--out", "out", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    for arm in ("single:fake/a", "single:fake/b", "best-of", "merge", "vote", "self-consistency"):
        assert arm in proc.stdout
    assert "recommendation: fusion does not pay here" in proc.stdout
    assert "equal budget: fake/b x2 with voting" in proc.stdout  # a tie on accuracy: b uses fewer tokens
    assert "progress: 36/36 arms scored" in proc.stderr  # 6 items x (2 singles + 3 modes + self-consistency)
    report = json.loads((cwd / "out" / "report.json").read_text())
    arms = {a["arm"]: a for a in report["arms"]}
    assert arms["single:fake/a"]["correct"] == 3 and arms["single:fake/b"]["correct"] == 3
    assert arms["merge"]["correct"] == 3  # "It is 4." is right on the odd items only
    assert arms["best-of"]["oracle"] == 1.0 and arms["single:fake/a"]["cost_total"] == pytest.approx(0.006)
    html = (cwd / "out" / "report.html").read_text()
    assert html.startswith("<!doctype html>") and html.count("<svg") == 2
    assert " src=" not in html and "<link" not in html and "@import" not in html  # self-contained
    as_json = run("eval", "sums.jsonl", *ARGS, "--out", "out", "--json", cwd=cwd)  # --format json
    assert json.loads(as_json.stdout)["recommendation"] == report["recommendation"]
    assert "resumed: 36 result(s)" in as_json.stderr  # everything was already done: nothing re-ran


def _strip_timing(report: dict) -> dict:
    for arm in report["arms"]:
        for key in ("latency_median", "latency_p90"):
            arm.pop(key)
    return report


def test_resume_after_a_killed_run_gives_the_same_report(project):
    cwd, up = project
    whole = run("eval", "sums.jsonl", *ARGS, "--out", "whole", cwd=cwd)
    assert whole.returncode == 0, whole.stderr
    calls_whole = len(up.requests)

    results = cwd / "cut" / "results.jsonl"
    child = subprocess.Popen(
        [*POLYFUSE, "eval", "sums.jsonl", *ARGS, "--out", "cut", "--concurrency", "1"],
        cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = results.read_text().count('"type": "result"') if results.exists() else 0
        if done >= 12:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 12 <= done < 36, "the run must be killed part-way"
    calls_before = len(up.requests) - calls_whole

    resumed = run("eval", "sums.jsonl", *ARGS, "--out", "cut", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed:" in resumed.stderr
    a = _strip_timing(json.loads((cwd / "whole" / "report.json").read_text()))
    b = _strip_timing(json.loads((cwd / "cut" / "report.json").read_text()))
    assert a == b
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    keys = [(x["item"], x["arm"]) for x in lines if x["type"] == "result"]
    assert len(keys) == len(set(keys)) == 36
    # work finished before the kill was not redone: the two halves together made at most the calls of one
    # run, plus what was in flight when the process died
    calls_after = len(up.requests) - calls_whole - calls_before
    assert calls_before + calls_after <= calls_whole + 4


def _exit_2(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    "lines, extra, message",
    [
        (['{"prompt": "x", "answer": 1}'], ["--scorer", "telepathy"], "unknown scorer 'telepathy'"),
        (['{"prompt": "x", "answer": 1}', '{"prompt": "y"}'], ["--scorer", "numeric"],
         "line 2: scorer 'numeric' needs the field 'answer'"),
        (['{"prompt": "x", "tests": "assert True"}'], [], "line 1: no scorer"),
        (['{"prompt": "x", "answer": 1}'], ["--scorer", "numeric", "--judge-methods", "label,vibes"],
         "unknown --judge-methods vibes; valid: json, auto, label, yesno, label+yesno, likelihood, pmi"),
        (['{"prompt": "x", "answer": 1}'], ["--scorer", "numeric", "--judges", "fake/judge,nowhere/x"],
         "unknown provider prefix 'nowhere'"),
        (['{"prompt": "x", "answer": 1}'], ["--scorer", "numeric", "--judges", "local/nope"],
         "unknown local model 'local/nope'"),
        (['{"prompt": "x", "rubric": "good"}'], ["--scorer", "rubric"], "needs a grader model of its own: --grader"),
        (['{"prompt": "x", "answer": 1}'], ["--scorer", "exact", "--modes", "single,blend"], "unknown mode(s) blend"),
        (['{"prompt": "x", "answer": 1}'], ["--scorer", "exact", "--limit", "0"], "--limit must be at least 1"),
        (["{broken", "[1]"], ["--scorer", "exact"], "has no usable items (2 malformed line(s))"),
    ],
)  # fmt: skip
def test_eval_mistakes_exit_2(project, lines, extra, message):
    cwd, _ = project
    (cwd / "bad.jsonl").write_text("\n".join(lines) + "\n")
    _exit_2(run("eval", "bad.jsonl", "--pool", "fake/a", "--judge", "fake/judge", *extra, cwd=cwd), message)


def test_missing_dataset_judge_and_foreign_results_exit_2(project):
    cwd, _ = project
    _exit_2(run("eval", "nope.jsonl", *ARGS, cwd=cwd), "no dataset 'nope.jsonl'")
    _exit_2(run("eval", "sums.jsonl", "--pool", "fake/a", "--modes", "best-of", "--scorer", "numeric",
                "--config", str(cwd / "polyfuse.toml"), "--judge", "", cwd=cwd), "need a judge")  # fmt: skip
    assert run("eval", "sums.jsonl", *ARGS, "--limit", "1", "--out", "shared", cwd=cwd).returncode == 0
    _exit_2(
        run("eval", "sums.jsonl", *ARGS, "--limit", "2", "--out", "shared", cwd=cwd), "different evaluation"
    )
    fresh = run("eval", "sums.jsonl", *ARGS, "--limit", "2", "--out", "shared", "--fresh", cwd=cwd)
    assert fresh.returncode == 0 and "resumed" not in fresh.stderr


def test_malformed_lines_are_reported_and_skipped(project):
    cwd, _ = project
    good = (cwd / "sums.jsonl").read_text().splitlines()[:2]
    (cwd / "mixed.jsonl").write_text("\n".join([good[0], "{oops", good[1], '"just a string"']) + "\n")
    proc = run("eval", "mixed.jsonl", *ARGS, "--modes", "single", "--out", "m", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "mixed.jsonl line 2 skipped: invalid JSON" in proc.stderr
    assert "mixed.jsonl line 4 skipped: not a JSON object" in proc.stderr
    assert "2 malformed line(s) skipped, 2 items used" in proc.stderr
    assert "skipped 2 malformed line(s): line 2: invalid JSON" in proc.stdout
    report = json.loads((cwd / "m" / "report.json").read_text())
    assert [s["line"] for s in report["dataset"]["skipped"]] == [2, 4] and report["dataset"]["items"] == 2


def test_list_datasets(project):
    cwd, _ = project
    proc = run("eval", "--list-datasets", cwd=cwd)
    assert proc.returncode == 0 and "humaneval" in proc.stdout and "arith" in proc.stdout


def test_progress_bar_on_a_terminal(project):

    cwd, _ = project
    argv = [*POLYFUSE, "eval", "sums.jsonl", *ARGS, "--out", "tty"]
    code, out = run_in_pty(argv, cwd, {**ENV, "COLUMNS": "160", "TERM": "xterm"})
    assert code == 0, out
    assert "━" in out and "/36" in out  # rich's bar with done/total, redrawn as arms finish
    assert "progress:" not in out  # the line-per-tenth fallback is for pipes only
    assert "recommendation:" in out


def test_code_items_need_an_adequate_sandbox_or_the_users_opt_in(tmp_path):
    """Without bwrap (here: not on PATH) code answers are not run at all, in one line with exit 2; with
    ``[code] allow_weak_sandbox = true`` they run under the Landlock sandbox and are scored."""
    answer = "```python\ndef one():\n    return 1\n```"
    with FakeUpstream({"a": Behaviour(text=answer, latency=0.05)}) as up:
        config = f'[providers.fake]\nbase_url = "{up.base_url}"\nmax_retries = 0\n[log]\nenabled = false\n'
        (tmp_path / "polyfuse.toml").write_text(config)
        items = [
            {"id": "wrong", "prompt": "Write one().", "tests": "assert one() == 2", "scorer": "code"},
            {"id": "right", "prompt": "Write one().", "tests": "assert one() == 1", "scorer": "code"},
        ]
        (tmp_path / "code.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
        argv = [*POLYFUSE, "eval", "code.jsonl", "--pool", "fake/a", "--modes", "single", "--no-equal-budget"]
        no_bwrap = {**ENV, "PATH": str(tmp_path / "empty-bin")}

        def call() -> subprocess.CompletedProcess[str]:
            args = [*argv, "--out", "out", "--format", "json"]
            return subprocess.run(
                args, capture_output=True, text=True, cwd=tmp_path, env=no_bwrap, timeout=300
            )

        refused = call()
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "bwrap is not installed" in refused.stderr and "allow_weak_sandbox = true" in refused.stderr
        assert up.requests == [] and not (tmp_path / "out").exists()  # nothing ran, not even the models
        (tmp_path / "polyfuse.toml").write_text(config + "[code]\nallow_weak_sandbox = true\n")
        allowed = call()
        assert allowed.returncode == 0, allowed.stderr
        lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
        verdicts = {r["item"]: r["correct"] for r in lines if r["type"] == "result"}
        assert verdicts == {"wrong": False, "right": True}
