"""What a pull request may not change about its own review.

In GitHub Actions the checkout is the pull request's head, written by whoever opened it. A ``polyfuse.toml``
there could point a provider prefix at another host (the run's provider keys, sent as its bearer token, would
go with it), name any environment variable as a key, and a ``.polyfuse/review.toml`` could hide the changed files
from the review. So inside the repository both are read as they are on the base commit, as GitHub itself
treats CODEOWNERS; a file the pull request adds is not read at all.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["inside", "at_commit", "toml_at_commit"]


def inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)


def at_commit(root: Path, commit: str, path: Path) -> str | None:
    """The text of ``path`` (inside ``root``) at ``commit``; None when the file is not there."""
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise ConfigError(
            f"unknown base '{commit}' in {root.resolve()}: it is not in this checkout (actions/checkout with fetch-depth: 0)"
        )
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    shown = _git(root, "show", f"{commit}:{rel}")
    return shown.stdout if shown.returncode == 0 else None


def toml_at_commit(root: Path, commit: str, path: Path) -> dict[str, Any] | None:
    text = at_commit(root, commit, path)
    if text is None:
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        raise ConfigError(f"invalid {rel}: {exc} (as on the base commit {commit[:12]})") from None
