"""Flags shared by commands, so that one spelling means the same everywhere.

``--json`` is the one spelling of JSON output: commands with a single report take it as a switch
(``run``, ``log``, ``keys``); commands with several formats (``eval``, ``usage``, ``code review``) keep
``--format`` and take ``--json`` as its short form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

__all__ = ["json_flag", "output_format"]

F = TypeVar("F", bound=Callable[..., object])


def json_flag(fn: F) -> F:
    """``--json``: the same as ``--format json``."""
    return click.option("--json", "as_json", is_flag=True, help="JSON output (the same as --format json).")(
        fn
    )


def output_format(fmt: str, as_json: bool, default: str) -> str:
    """The format asked for; ``--json`` with another explicit ``--format`` is a usage error, not a guess."""
    if not as_json:
        return fmt
    if fmt not in ("json", default):
        raise click.UsageError(f"--json and --format {fmt} ask for two different outputs; give one of them")
    return "json"
