"""Cost estimate before dispatch, from prompt tokens, output limits and the price table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BudgetExceededError, ConfigError
from ..providers.pricing import estimate_tokens
from .request import FusionRequest

if TYPE_CHECKING:
    from ..providers.registry import ProviderHub

__all__ = ["estimate_cost", "check_budget"]

_DEFAULT_OUTPUT = 1024
_JUDGE_FRAMING = 300  # tokens of judge instructions and fences around the candidates


def estimate_cost(
    request: FusionRequest, hub: ProviderHub, judge_calls: int, member_rounds: int = 1
) -> float:
    """Upper-bound estimate in USD: every member writes its max_tokens in every round, the judge reads them all."""
    prompt = estimate_tokens(request.messages)
    total = 0.0
    outputs = 0
    for spec in request.pool:
        out = int(spec.generation_params(request.params).max_tokens or _DEFAULT_OUTPUT)
        outputs += out
        for r in range(member_rounds):
            read = prompt + (0 if r == 0 else out * len(request.pool))
            price = hub.prices.estimate(spec.model, read, out)
            if price is None:
                raise ConfigError(
                    f"cannot estimate the cost of '{spec.model}': add [prices.\"{spec.model}\"] input/output "
                    "(USD per million tokens) to polyfuse.toml, or drop max_cost"
                )
            total += price
    if judge_calls and request.judge:
        out = int(request.judge_params.max_tokens or _DEFAULT_OUTPUT)
        price = hub.prices.estimate(request.judge, prompt + outputs + _JUDGE_FRAMING, out)
        if price is None:
            raise ConfigError(
                f"cannot estimate the cost of judge '{request.judge}': add its [prices] entry or drop max_cost"
            )
        total += price * judge_calls
    return total


def check_budget(request: FusionRequest, hub: ProviderHub, judge_calls: int, member_rounds: int = 1) -> float:
    estimate = estimate_cost(request, hub, judge_calls, member_rounds)
    if request.max_cost is not None and estimate > request.max_cost:
        raise BudgetExceededError(estimate, request.max_cost)
    return estimate
