"""A review as text, JSON or SARIF 2.1.0 (what code-scanning tools and editors read)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .review import CATEGORIES, ReviewResult

__all__ = ["FORMATS", "to_text", "to_json", "to_sarif"]

_SARIF_LEVEL = {"low": "note", "medium": "warning", "high": "error", "critical": "error"}


def to_text(review: ReviewResult) -> str:
    if not review.comments:
        return f"no comments against {review.base}" + (
            f" ({review.filtered} below the threshold)" if review.filtered else ""
        )
    lines = []
    for c in review.comments:
        lines.append(f"{c.file}:{c.line}: [{c.severity}] {c.category}: {c.message}")
        if c.suggestion:
            lines.append(f"    suggestion: {c.suggestion}")
        if c.disagreement:
            lines.append(f"    disagreement: {c.disagreement}")
    if review.filtered:
        lines.append(f"({review.filtered} comments below the severity threshold not shown)")
    return "\n".join(lines)


def to_json(review: ReviewResult) -> str:
    data = {
        "base": review.base,
        "comments": [c.to_dict() for c in review.comments],
        "filtered": review.filtered,
        "styleguide": review.styleguide is not None,
        "redactions": list(review.redactions),
        "fusion": json.loads(review.fusion.to_json()),
    }
    return json.dumps(data, indent=2)


def to_sarif(review: ReviewResult) -> str:
    results: list[dict[str, Any]] = []
    for c in review.comments:
        message = c.message + (f"\nSuggestion: {c.suggestion}" if c.suggestion else "")
        if c.disagreement:
            message += f"\nDisagreement: {c.disagreement}"
        results.append(
            {
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
        )
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
