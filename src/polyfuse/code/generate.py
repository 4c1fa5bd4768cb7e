"""``generate``: new code from a description, checked before the judge (parses, its docstring examples hold,
the given tests pass)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequestError
from ..types import Candidate, FusionResult, Message
from .checks import CheckFailed, CheckFn, CheckSuite, Program, examples_check, syntax_check, tests_check
from .context import read_source
from .task import CodeEnv, extract_code, raw_for_base

__all__ = ["GenerateResult", "generate"]


@dataclass
class GenerateResult:
    code: str
    language: str
    fusion: FusionResult
    redactions: tuple[str, ...] = ()


def _prompt(description: str, lang: str, tests: str | None, module: str) -> list[Message]:
    parts = [f"Write {lang} code for this task:\n{description.strip()}\n"]
    if tests is not None:
        parts.append(
            f"The code will be saved as {module}.py and must pass these tests:\n```{lang}\n{tests}\n```\n"
        )
    parts.append(
        "Give complete, working code with docstrings. Reply with one fenced code block and nothing else."
    )
    return [
        Message(role="system", content="You are an expert programmer. You write correct, simple code."),
        Message(role="user", content="\n".join(parts)),
    ]


def _raw_prompt(description: str, lang: str) -> str:
    mark = "#" if lang in ("python", "ruby", "bash") else "//"
    lines = "\n".join(f"{mark} {ln}" for ln in description.strip().splitlines())
    return f"{mark} Language: {lang}\n{mark} Task:\n{lines}\n\n"


def _program(code: str, lang: str, tests: str | None, module: str) -> Program:
    if not code.strip():
        raise CheckFailed("extracts", "no code in the answer")
    files = {f"{module}.py": code}
    if tests is not None:
        if re.search(rf"^\s*(from|import)\s+{re.escape(module)}\b", tests, re.M):
            files["test_given.py"] = tests
        else:  # tests that expect the code in scope: one file holds both
            files["test_given.py"] = code + "\n\n" + tests
    return Program(files, f"{module}.py", lang)


async def generate(
    env: CodeEnv,
    description: str,
    *,
    lang: str = "python",
    tests: Path | None = None,
    module: str = "solution",
) -> GenerateResult:
    if not description.strip():
        raise InvalidRequestError("the description is empty: say what the code should do")
    if not re.fullmatch(r"[A-Za-z_]\w*", module):
        raise InvalidRequestError(f"module name {module!r} is not a valid identifier")
    tests_text = read_source(tests) if tests is not None else None
    shown_tests = env.prepare(tests_text, str(tests)) if tests_text is not None else None
    limits = env.sandbox_limits()
    checks: list[CheckFn] = []
    if lang == "python":
        checks += [syntax_check(), examples_check(limits)]
    if tests_text is not None:
        checks.append(tests_check("test_given.py", limits))

    def materialise(c: Candidate) -> Program:
        return _program(env.redactor.restore(extract_code(c.text)), lang, tests_text, module)

    suite = CheckSuite(materialise, checks)
    result = await env.fuse(
        _prompt(env.prepare(description, "description"), lang, shown_tests, module),
        screen=suite,
        adapt=raw_for_base(_raw_prompt(description, lang), ["\n\n\n\n"]),
    )
    program = suite.programs.get(result.verdict.choice or "")
    code = program.source if program else extract_code(result.answer)
    return GenerateResult(code, lang, result, tuple(env.redactor.report()))
