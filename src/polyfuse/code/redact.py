"""Redact secrets (API keys, tokens, private keys, passwords in config) before a prompt leaves for a remote model.

Each distinct secret becomes a numbered placeholder such as ``[REDACTED-1:openai-key]``; the same secret gets the
same placeholder everywhere, and ``restore`` puts the originals back into a model's answer locally (an edit that
copies a line containing a placeholder still applies to the real file). What was redacted is reported by kind
and line, never by value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..types import Message

__all__ = ["Redaction", "Redactor", "SECRET_PATTERNS", "is_remote_model"]

# (kind, pattern); the secret is group "s" when present, else the whole match.
SECRET_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "private-key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9 ]+ )?PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9 ]+ )?PRIVATE KEY-----"
        ),
    ),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})\b")),
    ("openrouter-key", re.compile(r"\bsk-or-v1-[A-Za-z0-9]{20,}\b")),
    ("anthropic-key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}\b")),
    ("openai-key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("stripe-key", re.compile(r"\b[rs]k_live_[A-Za-z0-9]{20,}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\b")),
    ("url-password", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:(?P<s>[^\s@/]{3,})@")),
    (
        "assigned-secret",
        re.compile(
            r"(?i)\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
            r"private[_-]?key|client[_-]?secret)[\w.-]*\b[\"']?\s*[:=]\s*[\"'](?P<s>[^\"'\s]{6,})[\"']"
        ),
    ),
    (
        "env-secret",
        re.compile(
            r"(?im)^\s*(?:export\s+)?[A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY)[A-Z0-9_]*\s*=\s*"
            r"(?P<s>[^\s\"'#]{6,})\s*$"
        ),
    ),
]
_PLACEHOLDER = re.compile(r"\[REDACTED-(\d+):[a-z-]+\]")


@dataclass(frozen=True)
class Redaction:
    kind: str
    source: str  # where: a file path or "prompt"
    line: int

    def __str__(self) -> str:
        return f"{self.kind} in {self.source}:{self.line}"


@dataclass
class Redactor:
    """Redacts consistently across every text of one task and can restore its placeholders."""

    found: list[Redaction] = field(default_factory=list)
    _by_secret: dict[str, str] = field(default_factory=dict)
    _by_placeholder: dict[str, str] = field(default_factory=dict)

    def _placeholder(self, secret: str, kind: str) -> str:
        if secret not in self._by_secret:
            token = f"[REDACTED-{len(self._by_secret) + 1}:{kind}]"
            self._by_secret[secret] = token
            self._by_placeholder[token] = secret
        return self._by_secret[secret]

    def redact(self, text: str, source: str = "prompt") -> str:
        for kind, pattern in SECRET_PATTERNS:
            text = pattern.sub(lambda m, k=kind: self._replace(m, k, source), text)  # type: ignore[misc]
        return text

    def _replace(self, match: re.Match[str], kind: str, source: str) -> str:
        group = "s" if "s" in match.re.groupindex and match.group("s") else 0
        secret = match.group(group)
        if _PLACEHOLDER.fullmatch(secret) or secret.startswith("[REDACTED-"):
            return match.group(0)
        line = match.string.count("\n", 0, match.start(group)) + 1
        self.found.append(Redaction(kind, source, line))
        start, end = match.span(group)
        whole_start = match.start(0)
        token = self._placeholder(secret, kind)
        return match.group(0)[: start - whole_start] + token + match.group(0)[end - whole_start :]

    def redact_messages(self, messages: Sequence[Message]) -> list[Message]:
        return [
            m.model_copy(update={"content": self.redact(m.content)}) if m.content else m for m in messages
        ]

    def restore(self, text: str) -> str:
        """Put the original secrets back where a model copied a placeholder (local use only)."""
        return _PLACEHOLDER.sub(lambda m: self._by_placeholder.get(m.group(0), m.group(0)), text)

    def report(self) -> list[str]:
        return [str(r) for r in self.found]


_LOCAL_PREFIXES = ("local/", "local:")


def is_remote_model(model_id: str) -> bool:
    """Whether a prompt for this model leaves the machine. Only in-process models are known to stay: any HTTP
    provider (even one on localhost, which may forward) counts as remote."""
    return not model_id.startswith(_LOCAL_PREFIXES)
