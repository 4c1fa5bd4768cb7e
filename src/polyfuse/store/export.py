"""Export and import of logged runs: JSONL (one run per line, lossless) and CSV (one run per row; lists and
objects as JSON in their cells, so a CSV export also reads back whole)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from pydantic import ValidationError

from ..errors import InvalidRequestError
from .records import RunRecord

__all__ = ["FORMATS", "write_runs", "read_runs", "CSV_COLUMNS"]

FORMATS = ("jsonl", "csv")
_JSON_CELLS = ("verdict", "request", "meta", "candidates")
CSV_COLUMNS = [
    "id", "uid", "created_at", "source", "mode", "judge", "status", "error", "models", "prompt", "prompt_hash",
    "answer", "answer_hash", "agreement", "prompt_tokens", "completion_tokens", "cost", "cost_known",
    "wall_time", "overhead", *_JSON_CELLS,
]  # fmt: skip


def write_runs(runs: Iterable[RunRecord], fh: IO[str], fmt: str) -> int:
    """Write runs in ``fmt``; returns how many."""
    if fmt not in FORMATS:
        raise InvalidRequestError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    count = 0
    if fmt == "jsonl":
        for run in runs:
            fh.write(run.model_dump_json() + "\n")
            count += 1
        return count
    writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run in runs:
        writer.writerow(_csv_row(run))
        count += 1
    return count


def _csv_row(run: RunRecord) -> dict[str, Any]:
    data = run.model_dump(mode="json")
    row: dict[str, Any] = {k: data[k] for k in CSV_COLUMNS if k in data and k not in _JSON_CELLS}
    for key in _JSON_CELLS:
        row[key] = json.dumps(data[key], sort_keys=True, ensure_ascii=False)
    row["models"] = " ".join(run.models)  # for a spreadsheet reader; derived, ignored on import
    return {k: "" if v is None else v for k, v in row.items()}


def read_runs(fh: IO[str], fmt: str) -> Iterator[RunRecord]:
    """Read runs written by ``write_runs``. A broken line is an error naming its line number."""
    if fmt not in FORMATS:
        raise InvalidRequestError(f"unknown import format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "jsonl":
        for no, line in enumerate(fh, 1):
            if line.strip():
                yield _validated(lambda line=line: RunRecord.model_validate_json(line), no)
        return
    for no, row in enumerate(csv.DictReader(fh), 2):
        yield _validated(lambda row=row: RunRecord.model_validate(_from_csv(row)), no)


def _validated(make: Any, line_no: int) -> RunRecord:
    try:
        record: RunRecord = make()
    except (ValidationError, ValueError) as exc:
        raise InvalidRequestError(f"line {line_no}: not a polyfuse run record ({_first(exc)})") from None
    return record


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


_NULLABLE = {"judge", "error", "prompt", "prompt_hash", "answer", "answer_hash", "agreement", "id"}


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in row.items():
        if key == "models":
            continue
        if key in _JSON_CELLS:
            data[key] = json.loads(value) if value else None
        elif key in _NULLABLE and value == "":
            data[key] = None
        elif key == "cost_known":
            data[key] = value == "True"
        else:
            data[key] = value
    return data
