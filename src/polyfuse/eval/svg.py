"""Two small SVG plots drawn by hand, so the HTML report needs no script library and no network: a scatter
with error bars (accuracy vs cost) and horizontal box plots (latency distributions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from .metrics import percentile

__all__ = ["Point", "scatter", "boxplots", "PALETTE"]

PALETTE = {"single": "#4C78A8", "fusion": "#F58518", "sc": "#54A24B"}
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    y_low: float
    y_high: float
    kind: str


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    start = math.floor(lo / step) * step
    return [
        start + i * step for i in range(int((hi - start) / step) + 2) if start + i * step <= hi + step / 2
    ]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _free_spot(
    x: float, y: float, width: float, placed: list[tuple[float, float, float]]
) -> tuple[float, float]:
    """Move a label down, line by line, until it overlaps no label already drawn (points often coincide)."""
    while any(abs(y - py) < 13 and x < px + pw and px < x + width for px, py, pw in placed):
        y += 14
    placed.append((x, y, width))
    return x, y


def scatter(points: Sequence[Point], x_label: str, y_label: str, width: int = 640, height: int = 380) -> str:
    """Points with vertical error bars; y is a share (0..1) shown in percent."""
    left, right, top, bottom = 64, 24, 16, 48
    xmax = max((p.x for p in points), default=1.0) or 1.0
    xs = _ticks(0.0, xmax * 1.1)
    x_hi = xs[-1] if xs[-1] > 0 else 1.0

    def px(x: float) -> float:
        return left + (width - left - right) * x / x_hi

    def py(y: float) -> float:
        return top + (height - top - bottom) * (1 - y)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{escape(y_label)} vs {escape(x_label)}" {_FONT}>']  # fmt: skip
    for y in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{int(y * 100)}%</text>')
    for x in xs:
        out.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>'
        )
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{_fmt(x)}</text>')
    out.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(f'<text transform="translate(14 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f"{escape(y_label)}</text>")  # fmt: skip
    placed: list[tuple[float, float, float]] = []  # labels drawn so far: x, y, width
    for p in points:
        colour = PALETTE.get(p.kind, "#888")
        cx, cy = px(p.x), py(p.y)
        lx, ly = _free_spot(cx + 9, cy - 7, 7.0 * len(p.label), placed)
        tip = escape(
            f"{p.label}: {100 * p.y:.0f}% [{100 * p.y_low:.0f}-{100 * p.y_high:.0f}], {x_label} {_fmt(p.x)}"
        )
        out.append(f'<g class="point" data-arm="{escape(p.label)}"><title>{tip}</title>')
        out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{py(p.y_low):.1f}" y2="{py(p.y_high):.1f}" '
                   f'stroke="{colour}" stroke-width="2" opacity="0.6"/>')  # fmt: skip
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{colour}"/>')
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}">{escape(p.label)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def boxplots(series: Sequence[tuple[str, str, Sequence[float]]], x_label: str, width: int = 640) -> str:
    """One horizontal box per (label, kind, values): whiskers min-max, box p25-p75, median bar, p90 tick."""
    longest = max((len(label) for label, _, _ in series), default=10)
    left, right, top, row = min(320, 16 + 7 * longest), 24, 12, 30
    height = top + row * len(series) + 44
    vmax = max((max(v) for _, _, v in series if v), default=1.0) or 1.0
    xs = _ticks(0.0, vmax * 1.05)
    x_hi = xs[-1] if xs[-1] > 0 else 1.0

    def px(x: float) -> float:
        return left + (width - left - right) * x / x_hi

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{escape(x_label)} per arm" {_FONT}>']  # fmt: skip
    base = top + row * len(series)
    for x in xs:
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{base}" stroke="#eee"/>')
        out.append(f'<text x="{px(x):.1f}" y="{base + 16}" text-anchor="middle">{_fmt(x)}</text>')
    out.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>'
    )
    for i, (label, kind, values) in enumerate(series):
        y = top + row * i + row / 2
        out.append(f'<g class="box" data-arm="{escape(label)}">')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
        if values:
            q = {k: percentile(values, v) or 0.0 for k, v in
                 (("min", 0.0), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p90", 0.9), ("max", 1.0))}  # fmt: skip
            colour = PALETTE.get(kind, "#888")
            tip = escape(f"{label}: median {q['p50']:.3g}s, p90 {q['p90']:.3g}s, n={len(values)}")
            out.append(f"<title>{tip}</title>")
            out.append(
                f'<line x1="{px(q["min"]):.1f}" x2="{px(q["max"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#555"/>'
            )
            box_w = max(1.0, px(q["p75"]) - px(q["p25"]))
            out.append(f'<rect x="{px(q["p25"]):.1f}" y="{y - 9:.1f}" width="{box_w:.1f}" height="18" '
                       f'fill="{colour}" opacity="0.75"/>')  # fmt: skip
            out.append(f'<line x1="{px(q["p50"]):.1f}" x2="{px(q["p50"]):.1f}" y1="{y - 10:.1f}" y2="{y + 10:.1f}" '
                       'stroke="#000" stroke-width="2"/>')  # fmt: skip
            out.append(f'<line x1="{px(q["p90"]):.1f}" x2="{px(q["p90"]):.1f}" y1="{y - 6:.1f}" y2="{y + 6:.1f}" '
                       'stroke="#c00" stroke-width="2"/>')  # fmt: skip
        else:
            out.append(f'<text x="{left + 4}" y="{y + 4:.1f}" fill="#888">no successful calls</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
