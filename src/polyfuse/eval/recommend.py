"""The last line of a report: what to ship for this dataset, grounded in the figures above it.

A fusion mode (or self-consistency) is recommended only when it beats the best single model on the same items
with a sign test p < 0.05 on the discordant pairs; otherwise the recommendation is the best single model and
the line says that fusion does not pay here, with the numbers that show why. It ends by naming the judge and
method to ship: the best-of judge configuration with the highest judge accuracy (when a right candidate
existed), then the lowest position bias, then the fewest judge tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .metrics import ArmMetrics, best_single

__all__ = ["Recommendation", "recommend", "recommend_judge", "SIGNIFICANCE"]

SIGNIFICANCE = 0.05


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _name(arm: str) -> str:
    return arm.removeprefix("single:")


def _acc(m: ArmMetrics) -> str:
    return f"{_pct(m.accuracy)} [{_pct(m.ci_low)}-{_pct(m.ci_high)}]"


def _ratio(m: ArmMetrics, base: ArmMetrics) -> str:
    if base.tokens_mean <= 0:
        return "n/a"
    return f"{m.tokens_mean / base.tokens_mean:.1f}x the tokens"


def _versus(m: ArmMetrics) -> str:
    p = m.vs_best_single
    if p is None:
        return ""
    return f"{p.wins} wins / {p.losses} losses on {p.items} items, sign test p={p.p_value:.3g}"


def _significant(m: ArmMetrics) -> bool:
    p = m.vs_best_single
    return p is not None and p.wins > p.losses and p.p_value < SIGNIFICANCE


@dataclass(frozen=True)
class Recommendation:
    text: str
    arm: str | None  # the arm to ship
    fusion_pays: bool  # a fusion mode or self-consistency beat the best single model significantly
    judge: str | None = None  # the judge and method to ship (when judges ran)
    judge_method: str | None = None


def _judge_key(m: ArmMetrics) -> tuple[float, float, float]:
    return (
        -(m.judge_accuracy if m.judge_accuracy is not None else -1.0),
        m.position_bias if m.position_bias is not None else 0.5,
        m.judge_tokens_mean or 0.0,
    )


def recommend_judge(metrics: Sequence[ArmMetrics]) -> ArmMetrics | None:
    """The judge configuration to ship, from the best-of arms (any judge arm when best-of did not run)."""
    judged = [m for m in metrics if m.kind == "fusion" and m.judge is not None]
    best_of = [m for m in judged if m.arm.split(":")[0] == "best-of"]
    pool = best_of or judged
    return min(pool, key=_judge_key) if pool else None


def _judge_line(m: ArmMetrics) -> str:
    bias = "n/a" if m.position_bias is None else f"{_pct(m.position_bias)} on {m.position_probed} items"
    accuracy = "n/a" if m.judge_accuracy is None else _pct(m.judge_accuracy)
    method = m.judge_method or m.method or "json"
    fell_back = f", which fell back to {m.method}" if m.method and m.method != method else ""
    return (
        f"judge: {m.judge} with method {method}{fell_back} (judge accuracy {accuracy} when a right answer "
        f"existed, position bias {bias}, {m.judge_tokens_mean or 0:.0f} judge tokens/item)"
    )


def recommend(metrics: Sequence[ArmMetrics]) -> Recommendation:
    base = _recommend(metrics)
    top = recommend_judge(metrics)
    if top is None:
        return base
    method = top.judge_method or top.method or "json"
    return Recommendation(f"{base.text}; {_judge_line(top)}", base.arm, base.fusion_pays, top.judge, method)


def _recommend(metrics: Sequence[ArmMetrics]) -> Recommendation:
    best = best_single(metrics)
    fused = [m for m in metrics if m.kind in ("fusion", "sc")]
    if best is None:
        if not fused:
            return Recommendation("nothing to recommend: no arm ran", None, False)
        top = min(fused, key=lambda m: (-m.accuracy, m.tokens_mean))
        text = f"ship {top.arm} ({_acc(top)}); no single-model arm ran to compare it with (add 'single' to --modes)"
        return Recommendation(text, top.arm, False)
    if not fused:
        return Recommendation(
            f"ship {_name(best.arm)} ({_acc(best)}): no fusion mode ran to compare it with", best.arm, False
        )
    winners = [m for m in fused if _significant(m)]
    if winners:
        pick = min(winners, key=lambda m: (-m.accuracy, m.tokens_mean))
        sc = next((m for m in winners if m.kind == "sc"), None)
        if pick.kind == "fusion" and sc is not None and sc.accuracy >= pick.accuracy:
            pick = sc  # sampling the best model again does as well as mixing models, for the same budget
        what = (
            f"{_name(best.arm)} sampled with voting (self-consistency); mixing models does not pay more"
            if pick.kind == "sc"
            else pick.arm
        )
        text = (
            f"ship {what}: {_acc(pick)} vs {_name(best.arm)} alone {_acc(best)} ({_versus(pick)}), "
            f"at {_ratio(pick, best)}"
        )
        return Recommendation(text, pick.arm, True)
    top = min(fused, key=lambda m: (-m.accuracy, m.tokens_mean))
    delta = 100 * (top.accuracy - best.accuracy)
    line = (
        f"fusion does not pay here: ship {_name(best.arm)} alone ({_acc(best)}). "
        f"Best alternative {top.arm}: {_acc(top)}, {delta:+.0f} points ({_versus(top)}), at {_ratio(top, best)}"
    )
    if delta > 0:
        line += (
            f"; a gain this size is not significant on {best.n} items: evaluate more items before shipping it"
        )
    return Recommendation(line, best.arm, False)
