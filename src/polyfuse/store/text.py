"""What happens to a text before the run log stores it: known keys redacted, then a size cap.

Every text of a record passes here: prompt, answer, candidate texts and errors, the run's error, and every
string inside the verdict, the request summary and the metadata. The hash of a text is taken after redaction
and before the cap, so it identifies the whole text without deriving anything from a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..redaction import Redact, no_redaction

__all__ = ["TextPolicy", "cap"]

_MARK = " [... {n} more characters not stored]"


def cap(text: str, limit: int) -> str:
    """``text`` cut so that, with the marker saying how much was cut, it is at most ``limit`` characters.
    Idempotent: a capped text is not cut again."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(_MARK.format(n=len(text))))
    return text[:keep] + _MARK.format(n=len(text) - keep)


@dataclass(frozen=True)
class TextPolicy:
    max_chars: int = 32_768
    redact: Redact = field(default=no_redaction)

    def clean(self, text: str) -> str:
        """Redacted, not capped (what a hash is taken of)."""
        return self.redact(text)

    def text(self, text: str | None) -> str | None:
        """Redacted and capped."""
        return None if text is None else cap(self.redact(text), self.max_chars)

    def value(self, value: Any) -> Any:
        """Every string inside a JSON-like value (dicts, lists), redacted and capped; dict keys redacted."""
        if isinstance(value, str):
            return cap(self.redact(value), self.max_chars)
        if isinstance(value, dict):
            return {self.redact(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def then(self, redact: Redact) -> TextPolicy:
        """This policy with ``redact`` applied after its own redaction (e.g. the server's keys as well)."""
        first = self.redact
        return TextPolicy(self.max_chars, lambda text: redact(first(text)))
