"""A review as one GitHub pull-request review: a summary body and line comments anchored to the diff, with
suggestions as GitHub suggestion blocks.

``review_payload`` is the exact body of ``POST /repos/{repo}/pulls/{n}/reviews`` (``--format github`` prints
it). ``publish`` posts it, or, when an earlier run of polyfuse already reviewed the pull request, updates that
review's summary in place, keeps the comments that still stand, deletes those that no longer do and adds only
the new ones. A comment GitHub refuses (422: its line is not in the pull request's diff) moves into the summary.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .github import GitHubClient, GitHubUnprocessable, PullRequest
from .review import ReviewComment, ReviewResult, changed_lines
from .review_format import disputed_rule, notes
from .settings import SEVERITIES

__all__ = ["MARKER", "Published", "head_commit", "preflight", "publish", "review_payload", "summary"]

MARKER = "<!-- polyfuse-review -->"
_ADDITION = "<!-- polyfuse-review-addition -->"
_COMMENT_MARK = re.compile(r"<!-- polyfuse-comment:([0-9a-f]{16}) -->")


@dataclass
class Published:
    url: str
    review_id: int
    updated: bool  # an earlier polyfuse review was updated instead of a new one stacked
    posted: int = 0  # line comments added by this run
    kept: int = 0  # line comments of an earlier run that still stand
    deleted: int = 0  # line comments of an earlier run that no longer apply
    moved: list[ReviewComment] = field(default_factory=list)  # refused by GitHub, now in the summary


def _safe(text: str) -> str:
    """Model text in a comment: no HTML comments (they could fake our markers), no @mentions that ping people."""
    return text.replace("<!--", "&lt;!--").replace("@", "@\u200b")


def fingerprint(c: ReviewComment) -> str:
    return hashlib.sha256(f"{c.file}\0{c.line}\0{c.category}\0{c.message}".encode()).hexdigest()[:16]


def _new_side(file_diff: str) -> dict[int, str]:
    """New-side line number -> text, for the lines of a file's diff hunks."""
    out: dict[int, str] = {}
    new = 0
    for line in file_diff.splitlines():
        m = re.match(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@", line)
        if m:
            new = int(m.group(1))
        elif new and line.startswith(("+", " ")) and not line.startswith("+++"):
            out[new] = line[1:]
            new += 1
    return out


def _suggestion_block(c: ReviewComment, current: str | None) -> str:
    code = c.suggestion.strip("\n")
    if not code.strip() or (current is not None and code.strip() == current.strip()):
        return ""
    indent = re.match(r"[ \t]*", current or "").group(0)  # type: ignore[union-attr]
    if indent and not code[:1].isspace():  # the model dropped the line's indentation: restore it
        code = "\n".join(indent + line if line.strip() else line for line in code.splitlines())
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", code)), default=0) + 1)
    return f"\n\n{fence}suggestion\n{_safe(code)}\n{fence}"


def line_comment(c: ReviewComment, file_diff: str) -> dict[str, Any]:
    by = f"raised by {len(c.raised_by)} reviewer{'s' if len(c.raised_by) != 1 else ''}"
    if c.raised_by:
        by += f" ({', '.join(c.raised_by)})"
    body = f"**[{c.severity}] {c.category}**: {_safe(c.message)}\n\n<sub>{_safe(by)}"
    if c.disagreement and "disagree on severity" in c.disagreement:
        body += f"; {_safe(c.disagreement.split('; ')[-1])}"
    body += "</sub>" + _suggestion_block(c, _new_side(file_diff).get(c.line))
    body += f"\n<!-- polyfuse-comment:{fingerprint(c)} -->"
    return {"path": c.file, "line": c.line, "side": "RIGHT", "body": body}


def _listed(c: ReviewComment) -> str:
    text = f"- `{c.file}:{c.line}` **[{c.severity}] {c.category}**: {_safe(c.message)}"
    if c.suggestion:
        text += f" (suggestion: `{_safe(c.suggestion.splitlines()[0][:120])}`)"
    return text


def _changes(review: ReviewResult) -> str:
    parts, plus, minus = [], 0, 0
    for path, d in review.files.items():
        lines = d.splitlines()
        a = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
        r = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
        plus, minus = plus + a, minus + r
        parts.append(f"`{path}` (+{a} −{r})")
    shown = ", ".join(parts[:10]) + (f" and {len(parts) - 10} more" if len(parts) > 10 else "")
    return f"{len(parts)} file{'s' if len(parts) != 1 else ''} changed (+{plus} −{minus}): {shown}"


def summary(review: ReviewResult, moved: Sequence[ReviewComment] = ()) -> str:
    """The review's body: what changed, counts by severity, the pool, agreement, cost, and what was left out."""
    f = review.fusion
    counts = {s: sum(1 for c in review.comments if c.severity == s) for s in SEVERITIES}
    by_severity = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES))
    pool = ", ".join(dict.fromkeys(c.model for c in f.candidates)) or "none"
    judge = f"; judge {f.verdict.judge}" if f.verdict.judge else ""
    cost = f"${f.cost:.4f}" + ("" if f.cost_known else " (some calls unpriced)")
    lines = [
        MARKER,
        "## polyfuse review",
        "",
        f"**What changed:** {_changes(review)}",
        f"**Comments:** {len(review.comments)} ({by_severity}), each raised by at least "
        f"{review.options.min_agreement} of {len(review.reviewers)} reviewers",
        f"**Pool:** {pool}{judge} · agreement {f.agreement:.2f} · cost {cost}",
    ]
    lines += [f"- {_safe(n)}" for n in notes(review)]
    if f.failed_models:
        lines.append(
            "- failed: " + "; ".join(_safe(f"{m.member}: {m.reason[:120]}") for m in f.failed_models)
        )
    if moved:
        lines += ["", "### Comments on lines outside the pull request's diff", *(_listed(c) for c in moved)]
    if review.disputed and review.options.show_disputed:
        lines += [
            "",
            f"<details><summary>Disputed: {len(review.disputed)} ({disputed_rule(review)})</summary>",
            "",
            *(_listed(c) + f" — {_safe(', '.join(c.raised_by))}" for c in review.disputed),
            "",
            "</details>",
        ]
    return "\n".join(lines)


def review_payload(
    review: ReviewResult, commit_id: str, moved: Sequence[ReviewComment] = ()
) -> dict[str, Any]:
    """The exact body of ``POST /repos/{repo}/pulls/{n}/reviews`` for this review."""
    comments = [line_comment(c, review.files.get(c.file, "")) for c in review.comments if c not in moved]
    return {"commit_id": commit_id, "body": summary(review, moved), "event": "COMMENT", "comments": comments}


def head_commit(root: Path, env: Mapping[str, str]) -> str:
    """The commit a dry run's payload names: the pull request's head in an Actions run, else the tree's HEAD."""
    try:
        pr = json.loads(Path(env["GITHUB_EVENT_PATH"]).read_bytes()[: 8 * 2**20])["pull_request"]
        return str(pr["head"]["sha"])
    except (KeyError, OSError, ValueError, TypeError):
        pass  # not a pull request run: the local HEAD
    res = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return res.stdout.strip() or "HEAD"


async def preflight(client: GitHubClient, pull: PullRequest) -> PullRequest:
    """Check the token and the pull request before any model is called; the head as GitHub sees it now."""
    data = await client.call("GET", f"/repos/{pull.repo}/pulls/{pull.number}")
    head = (data or {}).get("head", {}).get("sha") if isinstance(data, dict) else None
    return PullRequest(pull.repo, pull.number, str(head or pull.head_sha), pull.base_sha, pull.base_ref)


async def _diff_lines(client: GitHubClient, pull: PullRequest) -> dict[str, set[int]]:
    """Lines a review comment may be anchored to, from GitHub's own patches of the pull request's files."""
    files = await client.paginate(f"/repos/{pull.repo}/pulls/{pull.number}/files")
    return {
        str(f.get("filename")): changed_lines(str(f.get("patch") or "")) for f in files if isinstance(f, dict)
    }


async def _create(
    client: GitHubClient, pull: PullRequest, review: ReviewResult, todo: list[ReviewComment], addition: bool
) -> tuple[dict[str, Any] | None, list[ReviewComment]]:
    """Post one review with ``todo`` as line comments; on a 422 move the comments GitHub cannot anchor into the
    summary and try again (all of them, if GitHub's patches do not show which)."""
    moved: list[ReviewComment] = []
    for attempt in range(3):
        payload = review_payload(review, pull.head_sha, moved)
        payload["comments"] = [line_comment(c, review.files.get(c.file, "")) for c in todo if c not in moved]
        if addition:
            if not payload["comments"]:
                return None, moved
            n = len(payload["comments"])
            payload["body"] = (
                f"{_ADDITION}\npolyfuse: {n} new comment{'s' if n != 1 else ''} since the last run."
            )
        try:
            data = await client.call("POST", f"/repos/{pull.repo}/pulls/{pull.number}/reviews", body=payload)
            return data, moved
        except GitHubUnprocessable:
            if attempt == 0:
                valid = await _diff_lines(client, pull)
                moved = [c for c in todo if c.line not in valid.get(c.file, set())]
            if attempt == 1 or not moved:
                moved = list(todo)
    raise GitHubUnprocessable("GitHub refused the review even without line comments")


async def publish(client: GitHubClient, pull: PullRequest, review: ReviewResult) -> Published:
    """Post the review, or update the one an earlier run posted (found by its marker)."""
    reviews = await client.paginate(f"/repos/{pull.repo}/pulls/{pull.number}/reviews")
    ours = [r for r in reviews if isinstance(r, dict) and MARKER in str(r.get("body") or "")]
    previous = ours[-1] if ours else None  # the latest, should two runs ever have raced
    if previous is None:
        data, moved = await _create(client, pull, review, list(review.comments), addition=False)
        assert data is not None
        return Published(
            str(data.get("html_url", "")),
            int(data["id"]),
            False,
            len(review.comments) - len(moved),
            0,
            0,
            moved,
        )
    author = (previous.get("user") or {}).get("login")
    existing: dict[str, int] = {}
    for c in await client.paginate(f"/repos/{pull.repo}/pulls/{pull.number}/comments"):
        m = _COMMENT_MARK.search(str(c.get("body") or "")) if isinstance(c, dict) else None
        if m and (c.get("user") or {}).get("login") == author:
            existing[m.group(1)] = int(c["id"])
    wanted = {fingerprint(c): c for c in review.comments}
    new = [c for fp, c in wanted.items() if fp not in existing]
    _, moved = await _create(client, pull, review, new, addition=True)
    stale = [cid for fp, cid in existing.items() if fp not in wanted]
    for cid in stale:
        await client.call("DELETE", f"/repos/{pull.repo}/pulls/comments/{cid}")
    rid = int(previous["id"])
    data = await client.call(
        "PUT", f"/repos/{pull.repo}/pulls/{pull.number}/reviews/{rid}", body={"body": summary(review, moved)}
    )
    kept = len(wanted) - len(new)
    url = str((data or {}).get("html_url") or previous.get("html_url", ""))
    return Published(url, rid, True, len(new) - len(moved), kept, len(stale), moved)
