"""``review``: review a git diff. Each member answers JSON comments (file, line, severity, category, message,
suggestion); a review must parse and its comments must point into the diff before the judge ranks the reviews.
Comments from every surviving review are merged: where members disagree (one flags an issue others did not, or
they rate it differently) the comment says so. Then the gates of ``ReviewOptions`` apply: a severity threshold,
a consensus bar (``min_agreement``: comments fewer reviewers raised are kept apart as *disputed*, never silently
dropped), a maximum number of comments, ignored files and a style guide."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError
from ..types import Candidate, FusionResult, Message
from .checks import CheckFailed, CheckSuite, Program
from .context import RepoFilter
from .review_config import ReviewOptions, load_review_options
from .settings import SEVERITIES
from .task import CodeEnv

__all__ = [
    "ReviewComment",
    "ReviewResult",
    "review",
    "gate",
    "CATEGORIES",
    "changed_lines",
    "git_diff",
    "split_files",
]

CATEGORIES = ("correctness", "security", "efficiency", "maintainability")
_MAX_COMMENTS = 6
_MAX_STYLEGUIDE = 20_000  # characters of the style guide given to the reviewers
_NEAR = 3  # lines: comments this close on the same file and category are the same issue


@dataclass
class ReviewComment:
    file: str
    line: int
    severity: str
    category: str
    message: str
    suggestion: str = ""
    raised_by: list[str] = field(default_factory=list)
    disagreement: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReviewResult:
    comments: list[ReviewComment]  # kept: severe enough, raised by at least min_agreement reviewers
    base: str
    fusion: FusionResult
    styleguide: str | None = None
    filtered: int = 0  # comments below the severity threshold
    redactions: tuple[str, ...] = ()
    disputed: list[ReviewComment] = field(default_factory=list)  # below the consensus bar, reported apart
    options: ReviewOptions = field(default_factory=ReviewOptions)
    over_limit: int = 0  # kept comments beyond max_comments
    reviewers: list[str] = field(default_factory=list)  # members whose review survived the checks
    files: dict[str, str] = field(default_factory=dict)  # path -> that file's part of the diff
    ignored: list[str] = field(default_factory=list)  # changed files left out by the ignore globs


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)


def git_diff(root: Path, base: str) -> str:
    if not root.is_dir():
        raise InvalidRequestError(f"{root} is not a directory")
    if _git(root, "rev-parse", "--is-inside-work-tree").returncode != 0:
        raise InvalidRequestError(f"{root} is not a git repository; review needs one")
    if not base or base.startswith("-"):  # never let a base be read as an option of git
        raise InvalidRequestError(f"invalid base '{base}': name a branch, tag or commit")
    if _git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode != 0:
        raise InvalidRequestError(f"unknown base '{base}' in {root}: name a branch, tag or commit")
    res = _git(root, "diff", "--no-color", "--no-ext-diff", "--unified=3", base, "--")
    if res.returncode != 0:
        raise InvalidRequestError(f"git diff failed: {res.stderr.strip()}")
    return res.stdout


def split_files(diff: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for chunk in re.split(r"(?m)^(?=diff --git )", diff):
        m = re.search(r"^\+\+\+ b/(.+)$", chunk, re.M)
        if m:
            parts[m.group(1).strip()] = chunk
    return parts


def changed_lines(file_diff: str) -> set[int]:
    """New-side line numbers of added lines and their hunk context."""
    lines: set[int] = set()
    new = 0
    for line in file_diff.splitlines():
        m = re.match(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@", line)
        if m:
            new = int(m.group(1))
            continue
        if new and line.startswith(("+", " ")) and not line.startswith("+++"):
            lines.add(new)
            new += 1
    return lines


def _schema() -> dict[str, Any]:
    comment = {
        "type": "object",
        "properties": {
            "file": {"type": "string", "maxLength": 200},
            "line": {"type": "integer"},
            "severity": {"type": "string", "enum": list(SEVERITIES)},
            "category": {"type": "string", "enum": list(CATEGORIES)},
            "message": {"type": "string", "maxLength": 300},
            "suggestion": {"type": "string", "maxLength": 300},
        },
        "required": ["file", "line", "severity", "category", "message", "suggestion"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"comments": {"type": "array", "items": comment, "maxItems": _MAX_COMMENTS}},
        "required": ["comments"],
        "additionalProperties": False,
    }


def _parse(text: str) -> list[dict[str, Any]]:
    start, end = text.find("{"), text.rfind("}")
    try:
        data = json.loads(text[start : end + 1], strict=False) if start != -1 else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("comments"), list):
        raise CheckFailed("parses", 'the review is not a JSON object with a "comments" list')
    return [c for c in data["comments"] if isinstance(c, dict)]


def _comment(raw: dict[str, Any], files: dict[str, set[int]]) -> ReviewComment | None:
    path = str(raw.get("file", "")).strip().removeprefix("b/").removeprefix("./")
    path = next((f for f in files if f == path or f.endswith("/" + path)), path)
    try:
        line = int(raw.get("line", 0))
    except (TypeError, ValueError):
        return None
    if path not in files or not any(abs(line - n) <= _NEAR for n in files[path]):
        return None
    severity = str(raw.get("severity", "medium")).lower()
    category = str(raw.get("category", "maintainability")).lower()
    return ReviewComment(
        path,
        line,
        severity if severity in SEVERITIES else "medium",
        category if category in CATEGORIES else "maintainability",
        str(raw.get("message", "")).strip(),
        str(raw.get("suggestion", "")).rstrip().strip("\n"),  # indentation matters in a code suggestion
    )


def _prompt(diff: str, styleguide: str | None) -> list[Message]:
    guide = f"Follow this repository's style guide:\n{styleguide}\n\n" if styleguide else ""
    user = (
        f"{guide}Review this change. Report real problems only, each with the file, the line number in the new "
        "version, a severity (low, medium, high, critical), a category (correctness, security, efficiency, "
        "maintainability), a message and a suggestion: the corrected code for that line (empty if you have "
        'none). Reply with JSON: {"comments": [...]} (an empty list if the change is fine).'
        f"\n\n```diff\n{diff}\n```"
    )
    return [
        Message(role="system", content="You are a careful senior code reviewer."),
        Message(role="user", content=user),
    ]


async def review(
    env: CodeEnv,
    root: Path,
    *,
    base: str = "main",
    diff: str | None = None,
    options: ReviewOptions | None = None,
    min_severity: str | None = None,
) -> ReviewResult:
    """Review the work tree at ``root`` against ``base`` (or the given unified ``diff``). ``options`` default to
    ``[code]`` plus ``.polyfuse/review.toml``; ``min_severity`` overrides theirs."""
    root = root.resolve()
    if options is None:
        options = load_review_options(root, env.settings)
    options = options.merged(min_severity=min_severity)
    _check_agreement(env, options.min_agreement)
    if diff is None:
        diff = git_diff(root, base)
    rf = RepoFilter(root)
    ignore = _ignore_spec(options.ignore)
    every = split_files(diff)
    ignored = sorted(f for f in every if ignore is not None and ignore.match_file(f))
    per_file = {f: d for f, d in every.items() if f not in ignored and not rf.ai_excluded(root / f)}
    if not per_file:
        raise InvalidRequestError(f"nothing to review: no changes against {base}")
    files = {f: changed_lines(d) for f, d in per_file.items()}
    styleguide = _styleguide(root, options.styleguide)
    shown = "".join(env.prepare(d, f) for f, d in per_file.items())

    def materialise(c: Candidate) -> Program:
        raw = _parse(env.redactor.restore(c.text))
        comments = [cm for cm in (_comment(r, files) for r in raw) if cm is not None and cm.message]
        if raw and not comments:
            raise CheckFailed(
                "anchored", f"none of the {len(raw)} comments points at a changed line of the diff"
            )
        return Program(
            {"review.json": c.text}, "review.json", "json", {"comments": comments, "raw": len(raw)}
        )

    suite = CheckSuite(materialise, [])
    result = await env.fuse(_prompt(shown, styleguide), screen=suite, json_schema=_schema())
    merged = merge_comments(suite, result)
    reviewers = [c.member for c in result.candidates if c.ok and c.member in suite.programs]
    kept, disputed, filtered, over_limit = gate(merged, options)
    return ReviewResult(
        kept,
        base,
        result,
        styleguide,
        filtered,
        tuple(env.redactor.report()),
        disputed=disputed,
        options=options,
        over_limit=over_limit,
        reviewers=reviewers,
        files=per_file,
        ignored=ignored,
    )


def gate(
    merged: list[ReviewComment], options: ReviewOptions
) -> tuple[list[ReviewComment], list[ReviewComment], int, int]:
    """(kept, disputed, below the severity threshold, over the maximum): severity first, then the consensus bar
    (a comment fewer than ``min_agreement`` reviewers raised is disputed), then the maximum number of comments."""
    threshold = SEVERITIES.index(options.min_severity)
    severe = [c for c in merged if SEVERITIES.index(c.severity) >= threshold]
    agreed = [c for c in severe if len(c.raised_by) >= options.min_agreement]
    disputed = [c for c in severe if len(c.raised_by) < options.min_agreement]
    limit = len(agreed) if options.max_comments is None else options.max_comments
    return agreed[:limit], disputed, len(merged) - len(severe), max(0, len(agreed) - limit)


def _styleguide(root: Path, name: str) -> str | None:
    """The style guide's text. It must live inside the repository: a pull request may change review.toml, and
    a path like /proc/self/environ would hand the run's secrets to the models."""
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise InvalidRequestError(
            f"the style guide '{name}' is outside the repository; name a file inside it"
        )
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")[:_MAX_STYLEGUIDE]


def _check_agreement(env: CodeEnv, min_agreement: int) -> None:
    pool = env.request([Message(role="user", content="probe")]).pool
    if min_agreement > len(pool):
        raise InvalidRequestError(
            f"min_agreement {min_agreement} is more than the {len(pool)} reviewers in the pool: "
            "lower it or add members"
        )


def _ignore_spec(patterns: list[str]) -> Any:
    if not patterns:
        return None
    import pathspec  # the 'code' extra; RepoFilter has already said how to install it when missing

    return pathspec.GitIgnoreSpec.from_lines(patterns)


def merge_comments(suite: CheckSuite, result: FusionResult) -> list[ReviewComment]:
    """Union of every surviving review's comments, the same issue merged, disagreement noted."""
    reviewers = [c.member for c in result.candidates if c.ok and c.member in suite.programs]
    chosen = result.verdict.choice
    order = sorted(reviewers, key=lambda m: m != chosen)  # the judge's pick leads
    clusters: list[list[tuple[str, ReviewComment]]] = []
    for member in order:
        for cm in suite.programs[member].data["comments"]:  # type: ignore[attr-defined]
            home = next(
                (
                    cl
                    for cl in clusters
                    if cl[0][1].file == cm.file
                    and cl[0][1].category == cm.category
                    and abs(cl[0][1].line - cm.line) <= _NEAR
                    and all(m != member for m, _ in cl)
                ),
                None,
            )
            (home.append((member, cm)) if home is not None else clusters.append([(member, cm)]))
    out = []
    for cl in clusters:
        lead = cl[0][1]
        by = [m for m, _ in cl]
        note = []
        if len(reviewers) > 1 and len(by) < len(reviewers):
            others = [m for m in reviewers if m not in by]
            note.append(
                f"raised by {len(by)} of {len(reviewers)} reviewers ({', '.join(by)}); not by {', '.join(others)}"
            )
        severities = {cm.severity for _, cm in cl}
        if len(severities) > 1:
            note.append(
                "reviewers disagree on severity: " + ", ".join(f"{cm.severity} ({m})" for m, cm in cl)
            )
        top = max(severities, key=SEVERITIES.index)
        out.append(
            ReviewComment(
                lead.file,
                lead.line,
                top,
                lead.category,
                lead.message,
                lead.suggestion,
                by,
                "; ".join(note) or None,
            )
        )
    return sorted(out, key=lambda c: (-SEVERITIES.index(c.severity), c.file, c.line))
