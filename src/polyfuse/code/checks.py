"""Execution-grounded checks: a candidate must parse, apply, and pass the given tests or its docstring's examples
before any judge sees it. Plugs into ``fuse(..., screen=suite)``.

A task turns a candidate into a ``Program`` (the files it implies; raising ``CheckFailed`` when it cannot, e.g. an
edit that does not apply). Then each check runs in order and the first failure rejects the candidate; code only
ever runs in the sandbox (temp directory, timeout, rlimits, no network, no writes outside).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ..errors import NoSurvivorsError
from ..types import Candidate, Check
from .sandbox import SandboxLimits, run_sandboxed

__all__ = [
    "Program",
    "CheckFailed",
    "CheckSuite",
    "CheckFn",
    "syntax_check",
    "syntax_error",
    "examples_check",
    "tests_check",
    "best_failing",
    "describe_no_survivors",
]


@dataclass
class Program:
    """What a candidate amounts to: files (relative path -> content) and the one under scrutiny."""

    files: dict[str, str]
    main: str
    language: str = "python"
    data: dict[str, object] = field(default_factory=dict)  # task-specific (diff, explanation, ...)

    @property
    def source(self) -> str:
        return self.files[self.main]


class CheckFailed(Exception):
    """Raised by a materialiser: the candidate does not even amount to a program."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name
        self.detail = detail


CheckFn = Callable[[Program], Awaitable[Check | None]]  # None: the check does not apply to this program
Materialise = Callable[[Candidate], Program]


def _clip(text: str, n: int = 400) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def syntax_error(source: str, name: str = "<code>") -> str | None:
    """Why Python source does not compile ("line 3: invalid syntax"), or None when it does."""
    try:
        compile(source, name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        return f"line {line}: {getattr(exc, 'msg', str(exc))}" if line else str(exc)
    return None


def syntax_check(baseline_error: bool = False) -> CheckFn:
    """Python must compile. With ``baseline_error`` (the file did not parse before the change either), an error
    is not held against the candidate."""

    async def check(program: Program) -> Check | None:
        if program.language != "python":
            return None
        started = time.perf_counter()
        detail = syntax_error(program.source, program.main)
        if detail is not None:
            if baseline_error:
                return Check(
                    name="parses", passed=True, detail=f"not judged (file had errors before): {detail}"
                )
            return Check(name="parses", passed=False, detail=detail, seconds=time.perf_counter() - started)
        return Check(name="parses", passed=True, detail="ok", seconds=time.perf_counter() - started)

    return check


_EXAMPLES_RUNNER = r"""
import ast, contextlib, doctest, importlib.util, io, json, re, sys
path = sys.argv[1]
name = path[:-3].replace("/", ".")
out = {"attempted": 0, "failed": 0, "failures": []}
spec = importlib.util.spec_from_file_location(name, path)
mod = importlib.util.module_from_spec(spec)
sys.modules[name] = mod
try:
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(mod)
except BaseException as e:
    out["error"] = f"importing failed: {type(e).__name__}: {e}"
    print(json.dumps(out)); sys.exit(0)
runner = doctest.DocTestRunner(verbose=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
for test in doctest.DocTestFinder(exclude_empty=True).find(mod, name):
    buf = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()):
        res = runner.run(test, out=buf.write, clear_globs=True)
    out["attempted"] += res.attempted; out["failed"] += res.failed
    if res.failed:
        out["failures"].append(buf.getvalue()[-600:])
# "f(x) == y" / "f(x) ➞ y" examples that are not doctest lines (common in task descriptions)
tree = ast.parse(open(path, encoding="utf-8").read())
for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node) or ""
        pat = re.compile(r"^\s*(" + re.escape(node.name) + r"\(.*\))\s*(?:==|➞|=>|->)\s*(.+?)\s*$")
        for line in doc.splitlines():
            m = pat.match(line)
            if not m or line.lstrip().startswith(">>>"):
                continue
            try:
                want = eval(m.group(2), vars(mod))
            except BaseException:
                continue
            out["attempted"] += 1
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    got = eval(m.group(1), vars(mod))
                ok = got == want
            except BaseException as e:
                ok, got = False, f"{type(e).__name__}: {e}"
            if not ok:
                out["failed"] += 1
                out["failures"].append(f"{m.group(1)}: expected {want!r}, got {got!r}")
print(json.dumps(out))
"""


def _examples_detail(data: dict[str, object]) -> tuple[bool, str, float]:
    attempted = int(data.get("attempted", 0))  # type: ignore[call-overload]
    failed = int(data.get("failed", 0))  # type: ignore[call-overload]
    failures = data.get("failures") or []
    passed = attempted - failed
    detail = f"{passed}/{attempted} examples passed"
    if failures and isinstance(failures, list):
        detail += "; first failure: " + _clip(str(failures[0]), 300)
    return failed == 0, detail, passed / attempted if attempted else 0.0


def examples_check(limits: SandboxLimits | None = None, import_errors_fail: bool = True) -> CheckFn:
    """The examples in the program's docstrings (doctest ``>>>`` lines and ``f(x) == y`` lines) must hold.
    ``import_errors_fail=False`` for code that is part of a project (its imports may not resolve in isolation)."""

    async def check(program: Program) -> Check | None:
        if program.language != "python" or (">>>" not in program.source and "(" not in program.source):
            return None
        files = {**program.files, "_polyfuse_examples.py": _EXAMPLES_RUNNER}
        argv = [sys.executable, "-I", "_polyfuse_examples.py", program.main]
        res = await run_sandboxed(argv, files=files, limits=limits or SandboxLimits(timeout=10))
        if not res.ok:
            return Check(
                name="examples", passed=False, detail=res.summary(), seconds=res.duration, sandbox=res.sandbox
            )
        try:
            data = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return Check(
                name="examples", passed=False, detail=_clip(res.stdout or res.stderr), seconds=res.duration
            )
        if "error" in data:
            if not import_errors_fail:
                return None
            return Check(
                name="examples",
                passed=False,
                detail=str(data["error"]),
                seconds=res.duration,
                sandbox=res.sandbox,
            )
        if not data.get("attempted"):
            return None  # no examples to go by
        ok, detail, _ = _examples_detail(data)
        return Check(name="examples", passed=ok, detail=detail, seconds=res.duration, sandbox=res.sandbox)

    return check


_MINI_RUNNER = r"""
import importlib.util, inspect, sys, traceback
spec = importlib.util.spec_from_file_location("tests_under_run", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
passed = failed = 0
for name, fn in list(vars(mod).items()):
    if name.startswith("test") and inspect.isfunction(fn) and not inspect.signature(fn).parameters:
        try:
            fn(); passed += 1
        except BaseException as e:
            failed += 1; print(f"FAILED {name}: {type(e).__name__}: {e}")
print(f"{failed} failed, {passed} passed" if failed else f"{passed} passed")
"""
_SUMMARY = re.compile(r"(\d+) (passed|failed|error|errors)")


def _test_argv(test_file: str) -> list[str]:
    if importlib.util.find_spec("pytest") is not None:
        return [sys.executable, "-I", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", test_file]
    return [sys.executable, "-I", "_polyfuse_tests.py", test_file]


def tests_check(test_file: str, limits: SandboxLimits | None = None, name: str = "tests") -> CheckFn:
    """Run ``test_file`` (already among the program's files) with pytest, or a minimal runner without it."""

    async def check(program: Program) -> Check | None:
        files = {**program.files, "_polyfuse_tests.py": _MINI_RUNNER}
        res = await run_sandboxed(
            _test_argv(test_file), files=files, limits=limits or SandboxLimits(timeout=30)
        )
        counts: dict[str, int] = {}
        for n, kind in _SUMMARY.findall(res.stdout):
            counts[kind.rstrip("s") if kind != "passed" else kind] = int(n)
        passed = counts.get("passed", 0)
        summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or res.summary()
        if res.ok and passed > 0:
            return Check(name=name, passed=True, detail=summary, seconds=res.duration, sandbox=res.sandbox)
        failure = next((ln for ln in res.stdout.splitlines() if ln.startswith(("FAILED", "E "))), "")
        detail = summary if res.ok else f"{summary}; {_clip(failure or res.summary(), 300)}"
        if res.ok and passed == 0:
            detail = "no test ran"
        return Check(name=name, passed=False, detail=detail, seconds=res.duration, sandbox=res.sandbox)

    return check


class CheckSuite:
    """A screen: materialise each candidate, run the checks in order, reject on the first failure.

    ``programs`` keeps each surviving candidate's program (by member) for the task to use once the judge chose.
    Results are cached by candidate text, so a fast path that checked a candidate early costs nothing later.
    """

    def __init__(self, materialise: Materialise, checks: Sequence[CheckFn], parallel: int = 2) -> None:
        self.materialise = materialise
        self.checks = list(checks)
        self.programs: dict[str, Program] = {}
        self.scores: dict[str, float] = {}
        self._cache: dict[str, tuple[list[Check], Program | None, float]] = {}
        self._limit = asyncio.Semaphore(parallel)

    async def evaluate(self, candidate: Candidate) -> tuple[list[Check], Program | None, float]:
        """(checks, program or None, score); score orders failing candidates (more checks passed is better)."""
        if candidate.text in self._cache:
            return self._cache[candidate.text]
        async with self._limit:
            result = await self._evaluate(candidate)
        self._cache[candidate.text] = result
        return result

    async def _evaluate(self, candidate: Candidate) -> tuple[list[Check], Program | None, float]:
        started = time.perf_counter()
        try:
            program = self.materialise(candidate)
        except CheckFailed as exc:
            return (
                [
                    Check(
                        name=exc.name, passed=False, detail=exc.detail, seconds=time.perf_counter() - started
                    )
                ],
                None,
                0.0,
            )
        checks: list[Check] = []
        score = 1.0
        for fn in self.checks:
            outcome = await fn(program)
            if outcome is None:
                continue
            checks.append(outcome)
            if not outcome.passed:
                m = re.match(r"(\d+)/(\d+)", outcome.detail)
                partial = int(m.group(1)) / int(m.group(2)) if m and int(m.group(2)) else 0.0
                return checks, program, score + partial
            score += 1.0
        return checks, program, score

    async def __call__(self, candidates: list[Candidate]) -> list[Candidate]:
        ok = [c for c in candidates if c.ok]
        results = await asyncio.gather(*(self.evaluate(c) for c in ok))
        verdicts = {c.member: r for c, r in zip(ok, results, strict=True)}
        out = []
        for c in candidates:
            if c.member not in verdicts:
                out.append(c)
                continue
            checks, program, score = verdicts[c.member]
            self.scores[c.member] = score
            failed = next((k for k in checks if not k.passed), None)
            if program is not None and failed is None:
                self.programs[c.member] = program
            update: dict[str, object] = {"checks": checks}
            if failed is not None:
                update.update(status="rejected", error=f"{failed.name}: {failed.detail}")
            out.append(c.model_copy(update=update))
        return out


def best_failing(candidates: Sequence[Candidate], scores: dict[str, float] | None = None) -> Candidate | None:
    """The rejected candidate that got furthest (most checks passed, then most examples)."""
    rejected = [c for c in candidates if c.status == "rejected"]
    if not rejected:
        return None

    def key(c: Candidate) -> tuple[float, int]:
        if scores and c.member in scores:
            return scores[c.member], 0
        return float(sum(k.passed for k in c.checks)), 0

    return max(rejected, key=key)


def describe_no_survivors(exc: NoSurvivorsError, scores: dict[str, float] | None = None) -> str:
    """One paragraph for the user: nothing passed; the best failing candidate and why each failed."""
    cands: list[Candidate] = list(exc.candidates)
    best = best_failing(cands, scores)
    lines = [f"no candidate passed the checks ({sum(c.status == 'rejected' for c in cands)} rejected)"]
    for c in cands:
        lines.append(f"  {c.member}: {c.error or c.status}")
    if best is not None:
        lines.append(f"best failing candidate ({best.member}, failed {best.error}):")
        lines.append(best.text)
    return "\n".join(lines)
