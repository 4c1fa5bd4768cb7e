"""``tests``: unit tests for a file (or one function in it), kept only if they run and pass against the code as
it is (a test that fails on working code is a wrong test; the judge never sees it)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequestError
from ..types import Candidate, FusionResult, Message
from .checks import CheckFailed, CheckSuite, Program, syntax_check, tests_check
from .context import read_source
from .task import CodeEnv, extract_code

__all__ = ["TestsResult", "generate_tests"]


@dataclass
class TestsResult:
    code: str
    test_path: str  # where the tests would go, beside the file
    fusion: FusionResult
    redactions: tuple[str, ...] = ()


def _functions(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {
        n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }


async def generate_tests(env: CodeEnv, path: Path, *, function: str | None = None) -> TestsResult:
    source = read_source(path)
    if path.suffix != ".py":
        raise InvalidRequestError(f"tests are generated for Python files; {path} is not one")
    module = path.stem
    if not re.fullmatch(r"[A-Za-z_]\w*", module):
        raise InvalidRequestError(f"{path.name} is not importable as a module name")
    if function is not None and function not in _functions(source):
        raise InvalidRequestError(f"no function or class '{function}' in {path}")
    target = f"the function {function}" if function else "the public functions"
    test_name = f"test_{module}.py"
    user = (
        f"Here is {path.name}:\n```python\n{env.prepare(source, str(path))}\n```\n"
        f"Write pytest unit tests for {target} of this module. Import from it with `from {module} import ...`. "
        "Cover normal cases and edge cases; every test must pass against the code as written. "
        "Reply with one fenced code block containing the whole test file."
    )
    messages = [
        Message(role="system", content="You write precise unit tests."),
        Message(role="user", content=user),
    ]

    def materialise(c: Candidate) -> Program:
        code = env.redactor.restore(extract_code(c.text))
        if "def test" not in code:
            raise CheckFailed("extracts", "no test function in the answer")
        return Program({f"{module}.py": source, test_name: code}, test_name)

    limits = env.sandbox_limits()
    suite = CheckSuite(
        materialise, [syntax_check(), tests_check(test_name, limits, name="tests pass on the code")]
    )
    result = await env.fuse(messages, screen=suite)
    program = suite.programs.get(result.verdict.choice or "")
    code = program.source if program else extract_code(result.answer)
    return TestsResult(code, str(path.with_name(test_name)), result, tuple(env.redactor.report()))
