"""What one evaluation is: a dataset, a pool, a judge, the arms to compare and the settings they share.

Arms: ``single:<member>`` for each pool member on its own, one per fusion mode (best-of, merge, debate, vote),
and ``self-consistency`` (the best single model sampled k times and voted, at about the fused pool's token
budget). With several judges or judge methods (``judges``, ``judge_methods``), every mode that uses a judge
runs once per (judge, method): ``best-of:<method>@<judge>``. The fingerprint covers everything that changes
results, so a results file is only ever resumed by the same evaluation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..code.sandbox import SandboxLimits, require_sandbox
from ..fusion.scoring import DEFAULT_METHOD, method_names
from ..fusion.strategies import get_strategy, strategy_names
from ..providers.base import MemberSpec
from ..types import GenerationParams
from .datasets import Dataset
from .errors import EvalError
from .results import FORMAT_VERSION
from .scorers import get_scorer

__all__ = ["EvalSpec", "JudgeConfig", "SC_ARM", "single_arm", "MODE_NAMES"]

SC_ARM = "self-consistency"
MODE_NAMES = ("single", *strategy_names())


def single_arm(member: str) -> str:
    return f"single:{member}"


@dataclass(frozen=True)
class JudgeConfig:
    judge: str
    method: str


@dataclass(frozen=True)
class FusionArm:
    """One fusion arm: a mode, and the judge configuration it runs with (None for the vote)."""

    name: str
    mode: str
    config: JudgeConfig | None


@dataclass
class EvalSpec:
    dataset: Dataset
    pool: list[MemberSpec]
    judge: str | None = None
    judges: list[str] = field(default_factory=list)  # several judges compared side by side (default: judge)
    judge_methods: list[str] = field(default_factory=lambda: [DEFAULT_METHOD])
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
    code_checks: bool = True  # fusion arms screen code candidates by the prompt's own examples (eval/checks)
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
        if needs_judge and not self.judge_models:
            raise EvalError(f"mode(s) {', '.join(needs_judge)} need a judge: --judge MODEL")
        bad = [m for m in self.judge_methods if m not in method_names()]
        if bad or not self.judge_methods:
            raise EvalError(
                f"unknown judge method(s) {', '.join(bad) or '(none)'}; valid: {', '.join(method_names())}"
            )
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
    def judge_models(self) -> list[str]:
        return list(dict.fromkeys(self.judges or ([self.judge] if self.judge else [])))

    @property
    def judge_configs(self) -> list[JudgeConfig]:
        return [JudgeConfig(j, m) for j in self.judge_models for m in dict.fromkeys(self.judge_methods)]

    @property
    def fusion_arms(self) -> list[FusionArm]:
        """Each fusion mode; a judge mode once per judge configuration (named by it when there are several)."""
        configs = self.judge_configs
        arms = []
        for mode in self.fusion_modes:
            if not get_strategy(mode).uses_judge:
                arms.append(FusionArm(mode, mode, None))
                continue
            for cfg in configs:
                name = mode if len(configs) == 1 else f"{mode}:{cfg.method}@{cfg.judge}"
                arms.append(FusionArm(name, mode, cfg))
        return arms

    @property
    def singles(self) -> list[str]:
        return [single_arm(s.id) for s in self.pool] if "single" in self.modes else []

    @property
    def runs_self_consistency(self) -> bool:
        return self.equal_budget and bool(self.fusion_modes)

    def first_phase_arms(self) -> list[str]:
        return [*self.singles, *(a.name for a in self.fusion_arms)]

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
            "judges": self.judge_models,
            "judge_methods": list(self.judge_methods),
            "modes": list(self.modes),
            "rounds": self.rounds,
            "params": self.params.model_dump(exclude_none=True),
            "judge_params": self.judge_params.model_dump(exclude_none=True),
            "system": self.system,
            "grader": self.grader,
            "equal_budget": self.equal_budget,
            "sc_k": self.sc_k,
            "seed": self.seed,
            "code_checks": self.code_checks,
        }
        data["fingerprint"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        return data


def _needs_grader(scorer: str) -> bool:
    return get_scorer(scorer).needs_grader
