"""Known secrets out of every text that leaves the process or is stored: responses, streams, the server log and
the run log all pass texts through one ``Redactor`` (an upstream may echo a provider key back in an error).

This is the redaction of keys polyfuse *holds* (provider keys, server keys), matched verbatim. The code
assistant's pattern-based redaction of secrets found in a user's files is another concern (code/redact.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .providers.registry import ProviderHub

__all__ = ["Redact", "Redactor", "provider_keys", "no_redaction"]

Redact = Callable[[str], str]
MARK = "[redacted]"


def no_redaction(text: str) -> str:
    return text


class Redactor:
    """Replaces every known secret (provider keys, server keys) in a text with ``[redacted]``. Secrets shorter
    than 6 characters are ignored: they would match ordinary words."""

    def __init__(self, secrets: Iterable[str]) -> None:
        keys = {s for s in secrets if len(s) >= 6}
        escaped = {json.dumps(s, ensure_ascii=False)[1:-1] for s in keys}  # as it appears inside JSON text
        self._secrets = sorted(keys | escaped, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MARK)
        return text


def provider_keys(hub: ProviderHub) -> list[str]:
    """Every provider key the hub would send (hosted prefixes and configured providers): configured keys and
    those found in the environment."""
    from .providers.registry import HOSTED_PRESETS

    keys = [hub.key_for(prefix)[0] for prefix in sorted({*HOSTED_PRESETS, *hub.providers})]
    return [k for k in keys if k]
