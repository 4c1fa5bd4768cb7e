"""Where the run log lives and what it keeps: the ``[log]`` table of polyfuse.toml."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["LogSettings", "default_log_path"]


def default_log_path() -> Path:
    """``runs.db`` in the user data dir (``$XDG_DATA_HOME/polyfuse`` or ``~/.local/share/polyfuse`` on Linux)."""
    return Path(platformdirs.user_data_dir("polyfuse")) / "runs.db"


class LogSettings(BaseModel):
    """``[log]`` in polyfuse.toml.

    ``url`` (``postgresql://user:pass@host:5432/db``) selects a shared PostgreSQL log (the ``postgres``
    extra); otherwise runs go to the SQLite file ``path``. With ``store_text = false`` prompts, answers and
    candidate texts are kept only as SHA-256 hashes (and the judge's free-text reasons are dropped).
    ``max_text_chars`` caps every stored text (prompt, answer, each candidate, each error); the hash is of the
    whole text. The server writes runs from a queue of at most ``queue_runs`` runs and ``queue_chars``
    characters of text; when it is full the oldest pending runs are dropped and a summary of them is stored.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    path: str | None = None
    url: str | None = Field(default=None, repr=False)  # may carry a password
    store_text: bool = True
    busy_timeout: float = Field(default=30.0, gt=0)  # seconds a writer waits for another one's lock
    max_text_chars: int = Field(default=32_768, ge=256)
    queue_runs: int = Field(default=1_000, ge=1)
    queue_chars: int = Field(default=32_000_000, ge=100_000)

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("log.url must be a postgresql:// URL (use log.path for a SQLite file)")
        return v

    def sqlite_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_log_path()

    def where(self) -> str:
        """The log's location for messages, without any password."""
        return redact_url(self.url) if self.url else str(self.sqlite_path())


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
