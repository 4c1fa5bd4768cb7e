"""One evaluation end to end: open (or resume) the results file, run every arm, write the JSON and HTML
reports next to it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..providers.registry import ProviderHub
from .html import render_html
from .report import EvalReport, build_report
from .results import ArmResult, ResultsFile
from .runner import Evaluation, Progress
from .spec import EvalSpec

__all__ = ["EvalOutput", "evaluate", "default_out_dir"]


@dataclass
class EvalOutput:
    report: EvalReport
    results: list[ArmResult]
    resumed: int  # results taken from an earlier, interrupted run
    results_path: Path
    json_path: Path
    html_path: Path


def default_out_dir(spec: EvalSpec) -> Path:
    """``polyfuse-eval/<dataset>-<fingerprint>``: the same evaluation run again resumes in the same place."""
    return Path("polyfuse-eval") / f"{spec.dataset.name}-{spec.header()['fingerprint'][:10]}"


async def evaluate(
    spec: EvalSpec,
    hub: ProviderHub,
    out_dir: Path | None = None,
    *,
    fresh: bool = False,
    progress: Progress | None = None,
) -> EvalOutput:
    out_dir = out_dir or default_out_dir(spec)
    results_file = ResultsFile(out_dir / "results.jsonl", spec.header(), fresh=fresh)
    try:
        evaluation = Evaluation(spec, hub, results_file, progress)
        results = await evaluation.run()
    finally:
        results_file.close()
    report = build_report(spec, spec.dataset, results, evaluation.sc_plan)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report, results), encoding="utf-8")
    return EvalOutput(report, results, results_file.resumed, results_file.path, json_path, html_path)
