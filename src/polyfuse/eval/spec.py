"""What one evaluation is: a dataset, a pool, a judge, the arms to compare and the settings they share.

Arms: ``single:<member>`` for each pool member on its own, one per fusion mode (best-of, merge, debate, vote),
and ``self-consistency`` (the best single model sampled k times and voted, at about the fused pool's token
budget). The fingerprint covers everything that changes results, so a results file is only ever resumed by
the same evaluation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..code.sandbox import SandboxLimits, require_sandbox
from ..fusion.strategies import get_strategy, strategy_names
from ..providers.base import MemberSpec
from ..types import GenerationParams
from .datasets import Dataset
from .errors import EvalError
from .results import FORMAT_VERSION
from .scorers import get_scorer

__all__ = ["EvalSpec", "SC_ARM", "single_arm", "MODE_NAMES"]

SC_ARM = "self-consistency"
MODE_NAMES = ("single", *strategy_names())


def single_arm(member: str) -> str:
    return f"single:{member}"


@dataclass
class EvalSpec:
    dataset: Dataset
    pool: list[MemberSpec]
    judge: str | None = None
    modes: list[str] = field(default_factory=lambda: list(MODE_NAMES))
    rounds: int = 2
    params: GenerationParams = field(default_factory=GenerationParams)
    judge_params: GenerationParams = field(
        default_factory=lambda: GenerationParams(temperature=0.0, max_tokens=512)
    )
    member_timeout: float | None = 120.0
    judge_timeout: float | None = 180.0
    system: str | None = None
    grader: str | None = None
    equal_budget: bool = True
    sc_k: int | None = None  # None: chosen to match the fused pool's tokens
    seed: int = 0
    concurrency: int = 2
    allow_weak_sandbox: bool = False  # code items may run under the Landlock fallback ([code] in the config)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        unknown = [m for m in self.modes if m not in MODE_NAMES]
        if unknown or not self.modes:
            raise EvalError(
                f"unknown mode(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(MODE_NAMES)}"
            )
        needs_judge = [m for m in self.fusion_modes if get_strategy(m).uses_judge]
        if needs_judge and not self.judge:
            raise EvalError(f"mode(s) {', '.join(needs_judge)} need a judge: --judge MODEL")
        if self.concurrency < 1:
            raise EvalError(f"--concurrency must be at least 1 (got {self.concurrency})")
        if self.sc_k is not None and self.sc_k < 2:
            raise EvalError(f"--sc-k must be at least 2 (got {self.sc_k})")
        if self.rounds < 1:
            raise EvalError(f"rounds must be at least 1 (got {self.rounds})")
        if any(_needs_grader(s) for s in self.dataset.scorers) and not self.grader:
            raise EvalError("the rubric scorer needs a grader model of its own: --grader MODEL")
        if "code" in self.dataset.scorers:
            require_sandbox(self.sandbox)  # before any model runs: no adequate sandbox is one line, exit 2

    @property
    def sandbox(self) -> SandboxLimits:
        """How the code scorer runs answers."""
        return SandboxLimits(timeout=15.0, cpu_seconds=10, allow_weak=self.allow_weak_sandbox)

    @property
    def fusion_modes(self) -> list[str]:
        return [m for m in self.modes if m != "single"]

    @property
    def singles(self) -> list[str]:
        return [single_arm(s.id) for s in self.pool] if "single" in self.modes else []

    @property
    def runs_self_consistency(self) -> bool:
        return self.equal_budget and bool(self.fusion_modes)

    def first_phase_arms(self) -> list[str]:
        return [*self.singles, *self.fusion_modes]

    def header(self) -> dict[str, Any]:
        data = {
            "version": FORMAT_VERSION,
            "dataset": {
                "name": self.dataset.name,
                "source": self.dataset.source,
                "items": len(self.dataset.items),
                "fingerprint": self.dataset.fingerprint,
            },
            "pool": [{"id": s.id, "model": s.model, "params": dict(s.params)} for s in self.pool],
            "judge": self.judge,
            "modes": list(self.modes),
            "rounds": self.rounds,
            "params": self.params.model_dump(exclude_none=True),
            "judge_params": self.judge_params.model_dump(exclude_none=True),
            "system": self.system,
            "grader": self.grader,
            "equal_budget": self.equal_budget,
            "sc_k": self.sc_k,
            "seed": self.seed,
        }
        data["fingerprint"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        return data


def _needs_grader(scorer: str) -> bool:
    return get_scorer(scorer).needs_grader
