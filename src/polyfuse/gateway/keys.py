"""API keys for people and teams: the record, the secret (shown once, stored as a SHA-256 hash), allow-lists.

A secret is 32 random bytes, so a fast hash is enough (no password stretching: nothing to brute-force); the
server hashes what a client presents and looks the hash up. ``hint`` keeps the secret's last four characters
so a person can tell their keys apart in ``polyfuse keys list``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .errors import GatewayError

__all__ = [
    "KeyRecord",
    "new_secret",
    "new_key_id",
    "hash_secret",
    "parse_globs",
    "SECRET_PREFIX",
]

SECRET_PREFIX = "pfk_"
_GLOB_CHARS = re.compile(r"^[A-Za-z0-9_.:/@+*?\[\]!=,#-]+$")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def _check_glob(pattern: str, what: str) -> str:
    if not pattern:
        raise GatewayError(
            f"--{what}: an empty pattern; give comma-separated globs such as 'openai/*,local/*'"
        )
    if len(pattern) > 200 or not _GLOB_CHARS.match(pattern):
        raise GatewayError(
            f"--{what}: invalid glob {pattern!r}: use model-id characters with * ? [..] wildcards, "
            "e.g. 'openrouter/openai/*'"
        )
    depth = 0
    for i, ch in enumerate(pattern):
        if ch == "[":
            if depth:
                raise GatewayError(f"--{what}: invalid glob {pattern!r}: '[' inside a [...] set at {i}")
            depth, start = 1, i
        elif ch == "]" and depth:
            if i == start + 1 or (i == start + 2 and pattern[start + 1] == "!"):
                raise GatewayError(f"--{what}: invalid glob {pattern!r}: an empty [...] set at {start}")
            depth = 0
    if depth:
        raise GatewayError(f"--{what}: invalid glob {pattern!r}: '[' at {start} is never closed with ']'")
    return pattern


def parse_globs(text: str | None, what: str) -> tuple[str, ...] | None:
    """``"openai/*, local/*"`` -> a validated tuple; None (no restriction) for None."""
    if text is None:
        return None
    return tuple(_check_glob(p.strip(), what) for p in text.split(","))


@dataclass(frozen=True)
class KeyRecord:
    """A key as stored (never its secret). ``models``/``presets`` None: no restriction beyond the server's."""

    id: str
    team: str
    status: str  # "active" or "revoked"
    hint: str
    period: str
    created_at: str
    name: str | None = None
    budget: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] | None = None
    presets: tuple[str, ...] | None = None
    rotated_at: str | None = None
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or any(fnmatchcase(model_id, p) for p in self.models)

    def allows_preset(self, preset: str) -> bool:
        return self.presets is None or any(fnmatchcase(preset, p) for p in self.presets)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "team": self.team,
            "status": self.status,
            "hint": "..." + self.hint,
            "budget": self.budget,
            "period": self.period,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "models": list(self.models) if self.models is not None else None,
            "presets": list(self.presets) if self.presets is not None else None,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
            "revoked_at": self.revoked_at,
        }
