"""Rendering for the terminal: live per-member progress and the plain-text report of a result."""

from __future__ import annotations

import time
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..fusion.events import FusionEvent
from ..types import Analysis, Candidate, FusionResult, Verdict

__all__ = ["LiveProgress", "LineProgress", "report", "short"]


def short(text: str, width: int = 70) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


class LiveProgress:
    """A table on stderr that fills in as members start, stream, finish or fail."""

    def __init__(self, console: Console) -> None:
        self.rows: dict[str, dict[str, str]] = {}
        self.started: dict[str, float] = {}
        self.judge = ""
        self.live = Live(self._table(), console=console, refresh_per_second=8, transient=True)

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        for col in ("member", "status", "latency", "tokens", "preview"):
            table.add_column(col)
        for member, row in self.rows.items():
            table.add_row(member, row["status"], row["latency"], row["tokens"], row["preview"])
        if self.judge:
            table.add_row("[judge]", self.judge, "", "", "")
        return table

    def __call__(self, event: FusionEvent) -> None:
        m = event.member or ""
        if event.type == "member_started":
            self.started[m] = time.perf_counter()
            self.rows[m] = {
                "status": f"[yellow]running (round {event.round})",
                "latency": "",
                "tokens": "",
                "preview": "",
            }
        elif event.type == "member_delta" and m in self.rows:
            self.rows[m]["preview"] = short(self.rows[m]["preview"] + (event.text or ""), 50)
            self.rows[m]["latency"] = f"{time.perf_counter() - self.started[m]:.1f}s"
        elif event.type in ("member_finished", "member_failed") and event.candidate is not None:
            c = event.candidate
            self.rows[c.member] = {
                "status": "[green]ok" if c.ok else f"[red]{c.status}",
                "latency": f"{c.latency:.2f}s",
                "tokens": str(c.usage.completion_tokens),
                "preview": short(c.text if c.ok else (c.error or ""), 50),
            }
        elif event.type == "judge_started":
            self.judge = f"[yellow]judging ({event.model}, attempt {event.data.get('attempt')})"
        elif event.type == "judge_finished":
            self.judge = (
                "[green]done" if event.data.get("ok") else f"[red]{short(str(event.data.get('error')), 60)}"
            )
        self.live.update(self._table())


class LineProgress:
    """Plain progress lines (used with --stream, where a live table would fight the streamed answer)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: FusionEvent) -> None:
        c = event.candidate
        if event.type == "member_finished" and c is not None:
            print(f"[{c.member}] ok in {c.latency:.2f}s (round {c.round})", file=self.out, flush=True)
        elif event.type == "member_failed" and c is not None:
            print(f"[{c.member}] {c.status}: {c.error}", file=self.out, flush=True)
        elif event.type == "judge_started":
            print(f"[judge {event.model}] judging…", file=self.out, flush=True)


def _candidate_line(c: Candidate, chosen: str | None) -> str:
    mark = "  <- chosen" if c.member == chosen else ""
    cost = "n/a" if c.cost is None else f"${c.cost:.6f}"
    if not c.ok:
        return f"  [{c.status}] {c.member} after {c.latency:.2f}s: {c.error}"
    return (
        f"  [ok] {c.member} ({c.model}) {c.latency:.2f}s, {c.usage.prompt_tokens}+{c.usage.completion_tokens} tokens, "
        f"{cost}{mark}\n      {short(c.text, 100)}"
    )


def _score(v: Verdict, score: float) -> str:
    return f"{score:g}/10" if v.method in (None, "json") else f"p={score:.2f}"


def _analysis(a: Analysis) -> list[str]:
    lines = ["  analysis:"]
    lines += [f"    consensus: {short(p, 90)}" for p in a.consensus]
    for c in a.contradictions:
        stances = "; ".join(f"{m}: {short(s, 40)}" for m, s in c.stances.items())
        lines.append(f"    contradiction: {short(c.point, 60)} ({stances})")
    for cov in a.partial_coverage:
        lines.append(f"    only {', '.join(cov.members) or '?'}: {short(cov.point, 80)}")
    for member, points in a.unique_insights.items():
        lines += [f"    unique to {member}: {short(p, 80)}" for p in points]
    lines += [f"    blind spot: {short(p, 90)}" for p in a.blind_spots]
    return lines


def _judged(mode: str, v: Verdict) -> list[str]:
    """The judge's verdict: method and confidence, scores with the reasons that belong to them, repairs."""
    how = f"by {v.method}" + (f", confidence {v.confidence:.2f}" if v.confidence is not None else "")
    target = f"chose {v.choice}" if mode == "best-of" else f"wrote the answer (held to {v.choice})"
    lines = [f"verdict: judge {v.judge} {target} {how}; judge's agreement {v.agreement:.2f}"]
    if v.method_note:
        lines.append(f"  note: {v.method_note}")
    if v.writer_rejected:
        lines.append(
            f"  writer rejected: it wrote {short(v.rejected_answer or '', 60)!r}; {v.choice} returned"
        )
    for s in sorted(v.scores, key=lambda s: -s.score):
        lines.append(f"  {s.label}={s.member}: {_score(v, s.score)} {short(s.reason, 80)}".rstrip())
    lines += [f"  repaired: {n}" for n in v.notes if not n.endswith("the chosen candidate was returned")]
    if v.analysis is not None:
        lines += _analysis(v.analysis)
    else:
        if v.consensus:
            lines.append("  consensus: " + "; ".join(short(p, 80) for p in v.consensus))
        if v.contradictions:
            lines.append("  contradictions: " + "; ".join(short(p, 80) for p in v.contradictions))
    return lines


def report(result: FusionResult) -> str:
    """Candidates, verdict and timings as plain text."""
    v = result.verdict
    lines = [f"candidates ({result.mode}):"]
    lines += [_candidate_line(c, v.choice) for c in result.candidates]
    shown = {c.member for c in result.candidates}
    lines += [f"  [{f.status}] {f.member}: {f.reason}" for f in result.failed_models if f.member not in shown]
    if v.skipped and sum(c.ok for c in result.candidates) == 1:
        lines.append(f"verdict: judge skipped, {v.choice} was the only answer left")
    elif v.skipped:
        lines.append(
            f"verdict: judge skipped, the pool agreed ({result.agreement:.2f}); vote chose {v.choice}"
        )
    elif v.judge_failed:
        lines.append(f"verdict: judge failed ({v.failure_reason}); fell back to vote, chose {v.choice}")
    elif v.judge is None:
        lines.append(f"verdict: vote chose {v.choice}")
    else:
        lines += _judged(result.mode, v)
    cost = f"${result.cost:.6f}" + ("" if result.cost_known else " (some prices unknown)")
    lines.append(
        f"timings: wall {result.wall_time:.2f}s, models {result.critical_path:.2f}s, "
        f"overhead {result.overhead * 1000:.1f} ms; measured agreement {result.agreement:.2f}; "
        f"tokens {result.usage.total_tokens}; cost {cost}"
    )
    return "\n".join(lines)
