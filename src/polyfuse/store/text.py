"""What happens to a text before the run log stores it: known keys redacted, then a size cap.

Every text of a record passes here: prompt, answer, candidate texts and errors, the run's error, and every
string inside the verdict, the request summary and the metadata. The hash of a text is taken after redaction
and before the cap, so it identifies the whole text without deriving anything from a key. A JSON value whose
serialisation holds no secret (the ``Redactor`` also knows each key's JSON-escaped form) and fits the cap is
kept as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..redaction import Redact, no_redaction

__all__ = ["TextPolicy", "cap"]

_MARK = " [... {n} more characters not stored]"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


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
        if value is None or self._clean_json(value) is not None:
            return value
        return self._walk(value)

    def json(self, value: Any) -> str | None:
        """``value`` as stored: JSON text, every string in it redacted and capped."""
        if value is None:
            return None
        text = self._clean_json(value)
        return text if text is not None else _dumps(self._walk(value))

    def _clean_json(self, value: Any) -> str | None:
        """The JSON text of a value that needs no change (nothing over the cap, no secret), else None: one
        serialisation and one scan instead of a walk over every key, for the common case."""
        text = _dumps(value)
        return text if len(text) <= self.max_chars and self.redact(text) == text else None

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return cap(self.redact(value), self.max_chars)
        if isinstance(value, dict):
            return {self.redact(str(k)): self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value

    def then(self, redact: Redact) -> TextPolicy:
        """This policy with ``redact`` applied after its own redaction (e.g. the server's keys as well)."""
        first = self.redact
        return TextPolicy(self.max_chars, lambda text: redact(first(text)))
