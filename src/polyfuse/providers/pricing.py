"""Prices per million tokens, used when the upstream reports no ``usage.cost``; local models cost 0."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..types import Message, Usage

__all__ = ["PriceTable", "DEFAULT_PRICES", "estimate_tokens"]

# USD per million (input, output) tokens, as published by the vendors; overridable in config [prices].
# Keys are the model name without the routing prefix, so OpenRouter and direct ids share one entry.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "openai/gpt-5": (1.25, 10.0),
    "openai/gpt-5-mini": (0.25, 2.0),
    "openai/gpt-4o": (2.5, 10.0),
    "openai/gpt-4o-mini": (0.15, 0.6),
    "anthropic/claude-sonnet-4.5": (3.0, 15.0),
    "anthropic/claude-haiku-4.5": (1.0, 5.0),
    "google/gemini-2.5-pro": (1.25, 10.0),
    "google/gemini-2.5-flash": (0.3, 2.5),
    "google/gemini-2.5-flash-lite": (0.1, 0.4),
    "deepseek/deepseek-chat": (0.27, 1.1),
    "meta-llama/llama-3.3-70b-instruct": (0.13, 0.4),
}

_FREE_PREFIXES = ("local/", "local:")


def estimate_tokens(messages: Sequence[Message]) -> int:
    """A cheap, provider-independent token estimate (about 4 characters per token, plus framing)."""
    chars = sum(len(m.content or "") for m in messages)
    return chars // 4 + 4 * len(messages) + 1


class PriceTable:
    def __init__(self, overrides: Mapping[str, tuple[float, float]] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}

    def lookup(self, model_id: str) -> tuple[float, float] | None:
        if model_id.startswith(_FREE_PREFIXES):
            return (0.0, 0.0)
        if model_id in self._prices:
            return self._prices[model_id]
        # "openrouter/openai/gpt-4o" and "openai/gpt-4o" share the vendor/model entry.
        _, _, rest = model_id.partition("/")
        if rest in self._prices:
            return self._prices[rest]
        # direct vendor ids such as "gemini/gemini-2.5-pro" -> "google/gemini-2.5-pro"
        name = model_id.rsplit("/", 1)[-1]
        for key, price in self._prices.items():
            if key.rsplit("/", 1)[-1] == name:
                return price
        return None

    def cost(self, model_id: str, usage: Usage) -> float | None:
        price = self.lookup(model_id)
        if price is None:
            return None
        return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000

    def estimate(self, model_id: str, prompt_tokens: int, max_output_tokens: int) -> float | None:
        return self.cost(model_id, Usage(prompt_tokens=prompt_tokens, completion_tokens=max_output_tokens))
