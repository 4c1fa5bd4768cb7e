"""Helpers for review tests: a git repository with a change, reviewers on a loopback fake upstream answering
scripted review JSON, and ``polyfuse code review`` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema

from polyfuse.testing.upstream import Behaviour

BASE_APP = "def f(x):\n    return x\n"
NEW_APP = "import os\n\ndef f(x):\n    return eval(x)\n\n\ndef g(y):\n    return y\n"
SARIF_SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("GITHUB_")}


def git(root: Path, *args: str) -> str:
    res = subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True)
    return res.stdout.strip()


def repo(root: Path) -> tuple[str, str]:
    """A repository whose work tree changes app.py against main; (base sha, head sha)."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "app.py").write_text(BASE_APP)
    git(root, "add", ".")
    git(root, "commit", "-qm", "base")
    base = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-qb", "feature")
    (root / "app.py").write_text(NEW_APP)
    git(root, "commit", "-qam", "change")
    return base, git(root, "rev-parse", "HEAD")


def comments(*items: tuple[str, int, str, str, str, str]) -> str:
    keys = ["file", "line", "severity", "category", "message", "suggestion"]
    return json.dumps({"comments": [dict(zip(keys, it, strict=True)) for it in items]})


EVAL = ("app.py", 4, "high", "security", "eval runs arbitrary code", "    return int(x)")
UNUSED = ("app.py", 1, "low", "maintainability", "os is imported but unused", "")
G = ("app.py", 8, "medium", "correctness", "g returns its input unchanged", "")


def reviewers(a: str, b: str, c: str) -> dict[str, Behaviour]:
    return {"rev-a": Behaviour(text=a), "rev-b": Behaviour(text=b), "rev-c": Behaviour(text=c)}


def config(tmp: Path, upstream_url: str) -> Path:
    pool = ", ".join(f'"{upstream_url}#rev-{x}"' for x in "abc")
    path = tmp / "polyfuse.toml"
    path.write_text(f'[code]\npool = [{pool}]\njudge = "{upstream_url}#judge"\nredact = "never"\n')
    return path


def event(tmp: Path, base: str, head: str, number: int = 7) -> Path:
    path = tmp / "event.json"
    path.write_text(
        json.dumps(
            {"pull_request": {"number": number, "head": {"sha": head}, "base": {"sha": base, "ref": "main"}}}
        )
    )
    return path


def review(
    root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyfuse.cli.main", "code", "review", "--mode", "vote", "--no-log", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=timeout,
    )


def sarif_errors(text: str) -> list[str]:
    """Where a SARIF log breaks the SARIF 2.1.0 schema (empty when it validates)."""
    validator = jsonschema.Draft4Validator(SARIF_SCHEMA)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(json.loads(text))
    ]
