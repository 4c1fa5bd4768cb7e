"""Evaluation harness: does fusion beat the best single model on *your* prompts, at what cost and latency?

from polyfuse.eval import EvalSpec, evaluate, load_dataset
spec = EvalSpec(load_dataset("arith"), pool=parse_pool("a,b"), judge="j", modes=["single", "best-of"])
async with ProviderHub.from_config(config) as hub:
    out = await evaluate(spec, hub)          # resumable; writes results.jsonl, report.json, report.html
print(out.report.recommendation)
"""

from .datasets import Dataset, EvalItem, builtin_datasets, load_dataset
from .errors import DatasetError, EvalError, ResultsMismatchError, UnknownScorerError
from .metrics import ArmMetrics, arm_metrics, sign_test, wilson
from .recommend import Recommendation, recommend
from .report import EvalReport, build_report, render_table, summary_lines
from .results import ArmResult, ResultsFile
from .runner import Evaluation
from .scorers import Score, Scorer, get_scorer, register_scorer, scorer_names
from .session import EvalOutput, default_out_dir, evaluate
from .spec import MODE_NAMES, SC_ARM, EvalSpec

__all__ = [
    "MODE_NAMES",
    "SC_ARM",
    "ArmMetrics",
    "ArmResult",
    "Dataset",
    "DatasetError",
    "EvalError",
    "EvalItem",
    "EvalOutput",
    "EvalReport",
    "EvalSpec",
    "Evaluation",
    "Recommendation",
    "ResultsFile",
    "ResultsMismatchError",
    "Score",
    "Scorer",
    "UnknownScorerError",
    "arm_metrics",
    "build_report",
    "builtin_datasets",
    "default_out_dir",
    "evaluate",
    "get_scorer",
    "load_dataset",
    "recommend",
    "register_scorer",
    "render_table",
    "scorer_names",
    "sign_test",
    "summary_lines",
    "wilson",
]
