"""Why an evaluation cannot run as asked. All are user-fixable: exit code 2."""

from __future__ import annotations

from ..errors import UserError

__all__ = ["EvalError", "DatasetError", "UnknownScorerError", "ResultsMismatchError"]


class EvalError(UserError):
    """The evaluation cannot run as given."""


class DatasetError(EvalError):
    """The dataset is missing, empty, or lacks the fields its scorer needs."""


class UnknownScorerError(EvalError):
    """A scorer name that is not registered."""


class ResultsMismatchError(EvalError):
    """The results file holds results of a different evaluation (another dataset, pool or setting)."""
