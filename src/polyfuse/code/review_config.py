"""How a review is gated: ``.polyfuse/review.toml`` in the repository, overridden by the command line.

```toml
min_severity = "medium"        # comments below this are counted, not shown
min_agreement = 2              # a comment needs this many reviewers raising it; the rest are "disputed"
max_comments = 10              # at most this many comments (the most severe first); the rest are counted
ignore = ["docs/**", "*.lock"] # files (gitignore-style globs) the review leaves out
styleguide = "STYLE.md"        # style guide given to the reviewers (default .polyfuse/styleguide.md)
show_disputed = true           # list disputed comments apart (false: only count them)
```

Unknown keys are errors, like everywhere in polyfuse's configuration.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from .settings import CodeSettings

__all__ = ["ReviewOptions", "REVIEW_CONFIG", "load_review_options"]

REVIEW_CONFIG = ".polyfuse/review.toml"
_MAX_IGNORE = 200


class ReviewOptions(BaseModel):
    """The gates of one review, resolved: file, then command line (or MCP arguments) on top."""

    model_config = ConfigDict(extra="forbid")

    min_severity: Literal["low", "medium", "high", "critical"] = "low"
    min_agreement: int = Field(default=1, ge=1, le=64)
    max_comments: int | None = Field(default=None, ge=0, le=1000)
    ignore: list[str] = Field(default_factory=list, max_length=_MAX_IGNORE)
    styleguide: str = ".polyfuse/styleguide.md"
    show_disputed: bool = True

    def merged(self, **overrides: Any) -> ReviewOptions:
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return ReviewOptions.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "review options"
    return f"{where}: {err['msg']}"


def load_review_options(
    root: Path,
    settings: CodeSettings | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> ReviewOptions:
    """``[code]`` defaults, then ``<root>/.polyfuse/review.toml`` (or ``data``, that file already read from
    elsewhere: the base commit of a pull request), then ``overrides`` (None means unset)."""
    settings = settings or CodeSettings()
    base = ReviewOptions(min_severity=settings.min_severity, styleguide=settings.styleguide)
    path = root / REVIEW_CONFIG
    if data is None and path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"invalid {REVIEW_CONFIG}: {exc}") from None
    if data:
        try:
            base = ReviewOptions.model_validate({**base.model_dump(), **data})
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            hint = " (known keys: " + ", ".join(ReviewOptions.model_fields) + ")"
            raise ConfigError(
                f"invalid {REVIEW_CONFIG}: {key}: {err['msg']}"
                + (hint if err["type"] == "extra_forbidden" else "")
            ) from None
    return base.merged(**overrides)
