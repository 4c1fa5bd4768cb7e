"""The optional structured analysis of a pool's answers: consensus, contradictions with each model's stance,
partial coverage, unique insights per model, blind spots.

The schema is bounded like the verdict's (fixed keys per label, enums for labels, ``maxItems`` and
``maxLength`` everywhere), so a small judge decoding under a grammar stays inside it. Labels are mapped back to
member ids when parsed; anything outside the schema is dropped, never trusted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..types import Analysis, Contradiction, Coverage

__all__ = ["analysis_schema", "ANALYSIS_KEYS", "parse_analysis"]

_POINT_MAX = 120
_STANCE_MAX = 80
_MAX_POINTS = 3
_MAX_CONTRADICTIONS = 2
_MAX_INSIGHTS = 2


def _text(limit: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": limit}


def _points(n: int) -> dict[str, Any]:
    return {"type": "array", "items": _text(_POINT_MAX), "maxItems": n}


def _per_label(labels: Sequence[str], value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {label: value for label in labels},
        "required": list(labels),
        "additionalProperties": False,
    }


def analysis_schema(labels: Sequence[str]) -> dict[str, Any]:
    contradiction = {
        "type": "object",
        "properties": {"point": _text(_POINT_MAX), "stances": _per_label(labels, _text(_STANCE_MAX))},
        "required": ["point", "stances"],
        "additionalProperties": False,
    }
    coverage = {
        "type": "object",
        "properties": {
            "point": _text(_POINT_MAX),
            "labels": {
                "type": "array",
                "items": {"type": "string", "enum": list(labels)},
                "maxItems": len(labels),
            },
        },
        "required": ["point", "labels"],
        "additionalProperties": False,
    }
    props = {
        "consensus": _points(_MAX_POINTS),
        "contradictions": {"type": "array", "items": contradiction, "maxItems": _MAX_CONTRADICTIONS},
        "partial_coverage": {"type": "array", "items": coverage, "maxItems": _MAX_POINTS},
        "unique_insights": _per_label(labels, _points(_MAX_INSIGHTS)),
        "blind_spots": _points(_MAX_POINTS),
    }
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


ANALYSIS_KEYS = (
    "- analysis: an object with\n"
    "  - consensus: at most 3 short points all answers agree on\n"
    "  - contradictions: at most 2 points where answers disagree, each with the point and each label's "
    "stance on it (a few words)\n"
    "  - partial_coverage: at most 3 points only some answers make, each with the labels that make it\n"
    "  - unique_insights: for each label, at most 2 points only that answer makes\n"
    "  - blind_spots: at most 3 things that matter for the request that no answer covers\n"
)


def _strings(value: Any, limit: int, n: int) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    out = [str(v).strip()[:limit] for v in value if isinstance(v, str | int | float) and str(v).strip()]
    return out[:n]


def _list(value: Any) -> list[Any]:
    return value[:20] if isinstance(value, list) else []


def _member(label: Any, labels: Mapping[str, str]) -> str | None:
    key = str(label).strip().upper().removeprefix("ANSWER").strip()
    return labels.get(key)


def parse_analysis(data: Any, labels: Mapping[str, str]) -> Analysis | None:
    """An Analysis from the judge's ``analysis`` object (labels -> member ids); None when it is not one."""
    if not isinstance(data, dict):
        return None
    contradictions = []
    for item in _list(data.get("contradictions")):
        if not isinstance(item, dict) or not str(item.get("point", "")).strip():
            continue
        raw: dict[Any, Any] = item["stances"] if isinstance(item.get("stances"), dict) else {}
        stances = {}
        for label, stance in raw.items():
            member = _member(label, labels)
            if member is not None and str(stance).strip():
                stances[member] = str(stance).strip()[:_STANCE_MAX]
        contradictions.append(Contradiction(point=str(item["point"]).strip()[:_POINT_MAX], stances=stances))
    coverage = []
    for item in _list(data.get("partial_coverage")):
        if not isinstance(item, dict) or not str(item.get("point", "")).strip():
            continue
        raw_labels = _list(item.get("labels"))
        members = [m for m in (_member(lb, labels) for lb in raw_labels) if m is not None]
        coverage.append(
            Coverage(point=str(item["point"]).strip()[:_POINT_MAX], members=list(dict.fromkeys(members)))
        )
    insights: dict[str, list[str]] = {}
    raw_insights: dict[Any, Any] = (
        data["unique_insights"] if isinstance(data.get("unique_insights"), dict) else {}
    )
    for label, points in raw_insights.items():
        member = _member(label, labels)
        found = _strings(points, _POINT_MAX, _MAX_INSIGHTS)
        if member is not None and found:
            insights[member] = found
    return Analysis(
        consensus=_strings(data.get("consensus"), _POINT_MAX, _MAX_POINTS),
        contradictions=contradictions[:_MAX_CONTRADICTIONS],
        partial_coverage=coverage[:_MAX_POINTS],
        unique_insights=insights,
        blind_spots=_strings(data.get("blind_spots"), _POINT_MAX, _MAX_POINTS),
    )
