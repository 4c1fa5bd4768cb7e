"""A review as text, JSON or SARIF 2.1.0 (what code-scanning tools and editors read)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .review import CATEGORIES, ReviewComment, ReviewResult

__all__ = ["FORMATS", "to_text", "to_json", "to_sarif", "notes", "disputed_rule"]

_SARIF_LEVEL = {"low": "note", "medium": "warning", "high": "error", "critical": "error"}


def to_text(review: ReviewResult) -> str:
    lines = [_comment_text(c) for c in review.comments]
    if not review.comments:
        lines.append(f"no comments against {review.base}")
    lines.extend(f"({note})" for note in notes(review))
    if review.disputed and review.options.show_disputed:
        lines.append(f"\ndisputed ({disputed_rule(review)}):")
        lines.extend(_comment_text(c) for c in review.disputed)
    return "\n".join(lines)


def _comment_text(c: ReviewComment) -> str:
    lines = [f"{c.file}:{c.line}: [{c.severity}] {c.category}: {c.message}"]
    if c.suggestion:
        lines.append(f"    suggestion: {c.suggestion}")
    if c.disagreement:
        lines.append(f"    disagreement: {c.disagreement}")
    return "\n".join(lines)


def disputed_rule(review: ReviewResult) -> str:
    return f"raised by fewer than {review.options.min_agreement} of {len(review.reviewers)} reviewers"


def notes(review: ReviewResult) -> list[str]:
    """What was left out and why: every comment is either shown or counted here."""
    out = []
    if review.filtered:
        out.append(f"{review.filtered} comments below the severity threshold {review.options.min_severity}")
    if review.over_limit:
        out.append(f"{review.over_limit} more comments over the maximum of {review.options.max_comments}")
    if review.disputed and not review.options.show_disputed:
        out.append(
            f"{len(review.disputed)} disputed comments hidden ({disputed_rule(review)}; --show-disputed)"
        )
    if review.ignored:
        out.append(f"{len(review.ignored)} files ignored: {', '.join(review.ignored[:5])}")
    return out


def to_json(review: ReviewResult) -> str:
    data = {
        "base": review.base,
        "comments": [c.to_dict() for c in review.comments],
        "disputed": [c.to_dict() for c in review.disputed],
        "filtered": review.filtered,
        "over_limit": review.over_limit,
        "options": review.options.model_dump(),
        "reviewers": review.reviewers,
        "ignored": review.ignored,
        "styleguide": review.styleguide is not None,
        "redactions": list(review.redactions),
        "fusion": json.loads(review.fusion.to_json()),
    }
    return json.dumps(data, indent=2)


def _sarif_result(c: ReviewComment, suppressed: str | None) -> dict[str, Any]:
    message = c.message + (f"\nSuggestion: {c.suggestion}" if c.suggestion else "")
    if c.disagreement:
        message += f"\nDisagreement: {c.disagreement}"
    result: dict[str, Any] = {
        "ruleId": f"polyfuse/{c.category}",
        "level": _SARIF_LEVEL[c.severity],
        "message": {"text": message},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": c.file},
                    "region": {"startLine": max(1, c.line)},
                }
            }
        ],
        "properties": {"severity": c.severity, "raisedBy": c.raised_by},
    }
    if suppressed is not None:  # disputed: reported, but marked as not agreed on (code scanning dismisses it)
        result["suppressions"] = [{"kind": "external", "justification": suppressed}]
        result["properties"]["disputed"] = True
    return result


def to_sarif(review: ReviewResult) -> str:
    results = [_sarif_result(c, None) for c in review.comments]
    if review.options.show_disputed:
        results += [_sarif_result(c, f"disputed: {disputed_rule(review)}") for c in review.disputed]
    rules = [
        {"id": f"polyfuse/{cat}", "name": cat, "shortDescription": {"text": f"{cat} issue"}}
        for cat in CATEGORIES
    ]
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "polyfuse",
                        "informationUri": "https://pypi.org/project/polyfuse/",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(sarif, indent=2)


FORMATS: dict[str, Callable[[ReviewResult], str]] = {"text": to_text, "json": to_json, "sarif": to_sarif}
