"""The self-contained HTML report: one file, inline CSS, inline SVG plots, a few lines of script to sort the
tables. Nothing is fetched when it opens."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape

from .metrics import ArmMetrics
from .report import EvalReport, summary_lines
from .results import ArmResult
from .svg import PALETTE, Point, boxplots, scatter

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
.rec{background:#f3f7ee;border-left:5px solid #54A24B;padding:.8rem 1rem;font-size:1.05rem}
.rec.no{background:#fdf3e7;border-color:#F58518}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{padding:.3rem .6rem;border-bottom:1px solid #e4e4e4;text-align:right}
th:first-child,td:first-child{text-align:left}
th{cursor:pointer;background:#fafafa;user-select:none}th.sorted-asc::after{content:" \\25B2"}
th.sorted-desc::after{content:" \\25BC"}
td.ok{color:#2a7a2a}td.bad{color:#b22}td.err{color:#888}
.legend span{display:inline-block;margin-right:1rem}.legend i{display:inline-block;width:.8rem;height:.8rem;
margin-right:.3rem;border-radius:50%}
ul.notes{color:#555;font-size:.9rem}
.grid{overflow-x:auto}
"""

_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _cell(text: str, sort: object, cls: str = "") -> str:
    key = "" if sort is None else sort
    klass = f' class="{cls}"' if cls else ""
    return f'<td data-sort="{escape(str(key))}"{klass}>{escape(text)}</td>'


def _metrics_table(report: EvalReport) -> str:
    head = ("arm", "accuracy", "95% CI", "oracle", "judge acc", "lost", "vs best single", "tokens/item", "cost",
            "cost/correct", "latency p50", "latency p90", "errors")  # fmt: skip
    rows = []
    for m in report.arms:
        p = m.vs_best_single
        versus = (
            "best"
            if m.arm == report.best_single
            else (f"+{p.wins}/-{p.losses}, p={p.p_value:.2g}" if p else "-")
        )
        cells = [
            _cell(m.arm, m.arm),
            _cell(_pct(m.accuracy), m.accuracy),
            _cell(f"{_pct(m.ci_low)}-{_pct(m.ci_high)}", m.ci_low),
            _cell(_pct(m.oracle), m.oracle),
            _cell(_pct(m.judge_accuracy), m.judge_accuracy),
            _cell("-" if m.lost is None else str(m.lost), m.lost),
            _cell(versus, (p.wins - p.losses) if p else 0),
            _cell(f"{m.tokens_mean:.0f}", m.tokens_mean),
            _cell(f"${m.cost_total:.4f}" + ("" if m.cost_known else "+?"), m.cost_total),
            _cell("-" if m.cost_per_correct is None else f"${m.cost_per_correct:.4f}", m.cost_per_correct),
            _cell("-" if m.latency_median is None else f"{m.latency_median:.2f}s", m.latency_median),
            _cell("-" if m.latency_p90 is None else f"{m.latency_p90:.2f}s", m.latency_p90),
            _cell(str(m.errors), m.errors),
        ]
        rows.append(f'<tr data-kind="{m.kind}">' + "".join(cells) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f'<table id="metrics" class="sortable"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _judges_table(report: EvalReport) -> str:
    judged = [m for m in report.arms if m.judge is not None]
    if not judged:
        return ""
    head = ("arm", "judge", "method", "accuracy", "judge acc", "position bias", "probed", "brier",
            "judge tokens/item", "writer rejected")  # fmt: skip
    rows = []
    for m in judged:
        cells = [
            _cell(m.arm, m.arm),
            _cell(m.judge or "-", m.judge),
            _cell(m.method or "-", m.method),
            _cell(_pct(m.accuracy), m.accuracy),
            _cell(_pct(m.judge_accuracy), m.judge_accuracy),
            _cell(_pct(m.position_bias), m.position_bias),
            _cell(str(m.position_probed), m.position_probed),
            _cell("-" if m.brier is None else f"{m.brier:.3f}", m.brier),
            _cell(f"{m.judge_tokens_mean or 0:.0f}", m.judge_tokens_mean),
            _cell(str(m.writer_rejected), m.writer_rejected),
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    table = f'<table id="judges" class="sortable"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f"<h2>Judges</h2>\n{table}"


def _accuracy_plot(arms: Sequence[ArmMetrics]) -> str:
    paid = any(m.cost_total > 0 for m in arms)
    x_label = "cost per item (USD)" if paid else "tokens per item (no call had a price)"
    points = [
        Point(
            m.arm,
            (m.cost_total / m.n if paid else m.tokens_mean) if m.n else 0.0,
            m.accuracy,
            m.ci_low,
            m.ci_high,
            m.kind,
        )  # fmt: skip
        for m in arms
    ]
    return scatter(points, x_label, "accuracy (95% CI)")


def _latency_plot(arms: Sequence[ArmMetrics], results: Sequence[ArmResult]) -> str:
    series = [
        (m.arm, m.kind, [r.latency for r in results if r.arm == m.arm and r.error is None]) for m in arms
    ]
    return boxplots(series, "latency per item (s): box p25-p75, black median, red p90, whiskers min-max")


def _item_grid(report: EvalReport, results: Sequence[ArmResult]) -> str:
    arms = [m.arm for m in report.arms]
    by = {(r.item, r.arm): r for r in results}
    items = list(dict.fromkeys(r.item for r in results))
    head = "<th>item</th>" + "".join(f"<th>{escape(a)}</th>" for a in arms)
    rows = []
    for item in items:
        cells = [_cell(item, item)]
        for arm in arms:
            r = by.get((item, arm))
            if r is None:
                cells.append(_cell("", ""))
            elif r.error:
                cells.append(_cell("error", -1, "err"))
            else:
                mark = "right" if r.correct else "wrong"
                cells.append(_cell(mark, int(r.correct), "ok" if r.correct else "bad"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table id="items" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f'<div class="grid">{table}</div>'


def render_html(report: EvalReport, results: Sequence[ArmResult]) -> str:
    d = report.dataset
    legend = "".join(
        f'<span><i style="background:{c}"></i>{escape(k)}</span>'
        for k, c in (
            ("single model", PALETTE["single"]),
            ("fusion mode", PALETTE["fusion"]),
            ("self-consistency", PALETTE["sc"]),
        )  # fmt: skip
    )
    summary = "".join(f"<li>{escape(line)}</li>" for line in summary_lines(report)[:-1])
    config = escape(json.dumps(report.config, indent=2))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>polyfuse eval: {escape(d["name"])}</title>
<style>{_CSS}</style></head>
<body>
<h1>Does fusion pay on {escape(d["name"])}?</h1>
<p>{d["items"]} items from <code>{escape(d["source"])}</code>, scored by {escape(", ".join(d["scorers"]))}.</p>
<p id="recommendation" class="rec{"" if report.fusion_pays else " no"}">{escape(report.recommendation)}</p>
<ul class="notes">{summary}</ul>
<h2>Per arm</h2>
{_metrics_table(report)}
{_judges_table(report)}
<h2>Accuracy vs cost</h2>
<div class="legend">{legend}</div>
<div id="plot-accuracy">{_accuracy_plot(report.arms)}</div>
<h2>Latency per arm</h2>
<div id="plot-latency">{_latency_plot(report.arms, results)}</div>
<h2>Per item</h2>
{_item_grid(report, results)}
<h2>Configuration</h2>
<pre>{config}</pre>
<script>{_JS}</script>
</body></html>
"""
