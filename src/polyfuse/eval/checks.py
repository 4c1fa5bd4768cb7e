"""Execution-grounded fusion for code items: before any judge (or vote) sees a candidate, its program must parse
and pass the examples written in the prompt's own docstring, as ``polyfuse code`` does. Never the hidden tests
the scorer uses: those decide whether the answer was right, not which answer the pool returns.

Single-model arms are not screened (one model has nothing to choose from). When no candidate passes, the
fused answer is the best failing one, what a user of ``polyfuse code`` is shown.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ..code.checks import CheckSuite, Program, examples_check, syntax_check
from ..code.sandbox import SandboxLimits
from ..types import Candidate
from .datasets import EvalItem
from .scorers import extract_code

__all__ = ["code_screen"]

_LIMITS = SandboxLimits(timeout=10, cpu_seconds=8)
QUOTES = '"' * 3


def _program(item: dict[str, Any], answer: str) -> Program:
    """The candidate's code as a module: the item's prefix (a HumanEval signature and docstring) continued by a
    body, or the whole function when the answer restates it. The same assembly the code scorer uses, without
    the hidden tests."""
    code = extract_code(answer)
    prefix = str(item.get("code_prefix") or "")
    entry = item.get("entry_point")
    if not (prefix and entry):
        return Program({"solution.py": f"{code}\n"}, "solution.py")
    if not re.search(rf"^\s*def\s+{re.escape(str(entry))}\b", code, re.M):
        body = code if code.startswith((" ", "\t")) else "    " + code.replace("\n", "\n    ")
        return Program({"solution.py": f"{prefix}{body}\n"}, "solution.py")
    # The answer restates the function: its own definition replaces the prompt's, and the prompt's examples
    # still apply: as the module docstring (doctest lines) and on a stub of the prompt's function ("f(x) == y"
    # lines are read from function docstrings), both evaluated against the answer's definition.
    examples = _docstring(prefix, str(entry)).replace(QUOTES, "'" * 3)
    source = f"r{QUOTES}{examples}{QUOTES}\n{prefix}    pass\n\n{code}\n"
    return Program({"solution.py": source}, "solution.py")


def _docstring(prefix: str, entry: str) -> str:
    try:
        tree = ast.parse(prefix + "    pass\n")
    except SyntaxError:
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry:
            return ast.get_docstring(node, clean=False) or ""
    return ""


def code_screen(item: EvalItem) -> CheckSuite | None:
    """The screen for a code item whose prompt carries examples; None for other items."""
    if item.scorer != "code":
        return None
    prompt = str(item.fields.get("code_prefix") or item.prompt)
    if ">>>" not in prompt and "==" not in prompt:
        return None

    def materialise(candidate: Candidate) -> Program:
        return _program(item.fields, candidate.text)

    return CheckSuite(materialise, [syntax_check(), examples_check(_LIMITS)])
