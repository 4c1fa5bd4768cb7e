"""Why a run log could not be used. All are user-fixable (a path, a URL, a newer polyfuse): exit code 2."""

from __future__ import annotations

from ..errors import UserError

__all__ = ["LogError", "LogUnavailableError", "LogCorruptError", "LogVersionError", "RunNotFoundError"]


class LogError(UserError):
    """The run log cannot be used as asked."""


class LogUnavailableError(LogError):
    """The database cannot be reached or opened (bad URL, server down, missing driver, unwritable path)."""


class LogCorruptError(LogError):
    """The file is not a readable polyfuse log; it is left untouched."""


class LogVersionError(LogError):
    """The log was written by a newer polyfuse (its schema is ahead of ours); it is left untouched."""


class RunNotFoundError(LogError):
    """No run with that id."""
