"""The results file: one JSON line per finished piece of work, appended as it finishes, so an interrupted
evaluation resumes where it stopped.

Line types (the ``type`` key): ``header`` (first line: what this evaluation is), ``round`` (an item's first-round calls, replayed
by every mode and by a resumed run) and ``result`` (one arm on one item, scored). A line cut short by a kill is
dropped on reopen; a header that does not match the evaluation being run is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ResultsMismatchError

__all__ = ["ArmKind", "MemberOutcome", "ArmResult", "ResultsFile", "FORMAT_VERSION"]

FORMAT_VERSION = 2
ArmKind = Literal["single", "fusion", "sc"]


class MemberOutcome(BaseModel):
    """One candidate an arm's judge (or vote) saw, and whether it was right."""

    model_config = ConfigDict(extra="forbid")

    member: str
    status: str
    correct: bool


class ArmResult(BaseModel):
    """One arm (a single model, a fusion mode, or self-consistency) on one item."""

    model_config = ConfigDict(extra="forbid")

    item: str
    arm: str
    kind: ArmKind
    answer: str = ""
    correct: bool = False
    detail: str = ""
    error: str | None = None
    tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    latency: float = 0.0
    candidates: list[MemberOutcome] = Field(default_factory=list)
    chosen: str | None = None
    judge_failed: bool = False
    grader_tokens: int = 0
    grader_cost: float = 0.0
    judge: str | None = None  # the judge configuration of a fusion arm: model and method
    judge_method: str | None = None
    method: str | None = None  # the method the verdict really used (json when a judge had no logprobs)
    judge_tokens: int = 0
    confidence: float | None = None  # the verdict's confidence in its choice (probability methods)
    position_flip: bool | None = (
        None  # best-of: the choice changed when the order was reversed (None: not probed)
    )
    writer_rejected: bool = False

    @property
    def oracle(self) -> bool:
        return any(c.correct for c in self.candidates)


class ResultsFile:
    """Append-only JSONL. ``results`` and ``rounds`` hold what is already done."""

    def __init__(self, path: Path, header: dict[str, Any], *, fresh: bool = False) -> None:
        self.path = path
        self.header = header
        self.results: dict[tuple[str, str], ArmResult] = {}
        self.rounds: dict[str, dict[str, dict[str, Any]]] = {}
        self.resumed = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not path.exists() or path.stat().st_size == 0:
            path.write_text(json.dumps({"type": "header", **header}) + "\n", encoding="utf-8")
        else:
            self._load()
        self._fh = path.open("a", encoding="utf-8")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):  # a line cut short by a kill: drop it so appends start clean
            raw = raw[: raw.rfind(b"\n") + 1]
            with self.path.open("r+b") as fh:
                fh.truncate(len(raw))
        lines = raw.decode("utf-8").splitlines()
        if not lines:  # killed while writing the header: start over
            self.path.write_text(json.dumps({"type": "header", **self.header}) + "\n", encoding="utf-8")
            return
        parsed = []
        for no, line in enumerate(lines, 1):
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                raise ResultsMismatchError(
                    f"{self.path} line {no} is not valid JSON; use --fresh to start over or another --out"
                ) from None
        first = dict(parsed[0])
        first.pop("type", None)
        if first.get("fingerprint") != self.header["fingerprint"]:
            raise ResultsMismatchError(
                f"{self.path} holds results of a different evaluation (dataset, pool, judge, modes or "
                "settings differ); use --fresh to start over or another --out"
            )
        for data in parsed[1:]:
            self._take(data)
        self.resumed = len(self.results)

    def _take(self, data: dict[str, Any]) -> None:
        line_type = data.pop("type", None)
        if line_type == "round":
            self.rounds[str(data["item"])] = dict(data["calls"])
        elif line_type == "result":
            try:
                result = ArmResult.model_validate(data)
            except ValidationError as exc:
                raise ResultsMismatchError(
                    f"{self.path}: unreadable result line ({exc.errors()[0]['msg']})"
                ) from None
            self.results[(result.item, result.arm)] = result

    def _append(self, data: dict[str, Any]) -> None:
        self._fh.write(json.dumps(data, ensure_ascii=False) + "\n")
        self._fh.flush()  # in the kernel now: a killed process loses nothing written
        os.fsync(self._fh.fileno())

    def add_round(self, item: str, calls: dict[str, dict[str, Any]]) -> None:
        self.rounds[item] = dict(calls)
        self._append({"type": "round", "item": item, "calls": calls})

    def add(self, result: ArmResult) -> None:
        self.results[(result.item, result.arm)] = result
        self._append({"type": "result", **result.model_dump(mode="json")})

    def done(self, item: str, arm: str) -> bool:
        return (item, arm) in self.results

    def close(self) -> None:
        self._fh.close()
