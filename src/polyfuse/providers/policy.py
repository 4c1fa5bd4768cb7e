"""Which model ids a hub may resolve: a ``ModelPolicy``, checked before anything is fetched, loaded or opened.

The CLI's user is the operator: ``ModelPolicy.permissive()`` lets any id through (raw URLs, any GGUF path).
A server's clients are not: its policy names what is allowed (the presets' members and judges, the configured
provider prefixes, ``[server] models``) and refuses raw ``http(s)://`` ids and ``local:`` paths unless the
config lists the base URL or a directory above the path. Deciding is pure string work: a refused id touches
neither the network nor the file system, so the answer cannot be used as a port scanner or a file oracle.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ModelNotAllowedError

__all__ = ["ModelPolicy", "normalize_base_url", "is_url"]

_SHOWN = 120  # characters of a refused id repeated in the message


def is_url(model_id: str) -> bool:
    """A raw ``http(s)://base#model`` id (the scheme in any case, as URLs allow)."""
    return model_id[:8].lower().startswith(("http://", "https://"))


def normalize_base_url(url: str) -> str:
    """``HTTP://Host:8000/v1/`` -> ``http://host:8000/v1``: the form allow-lists are compared in."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}" + (
        f"?{parts.query}" if parts.query else ""
    )


@dataclass(frozen=True)
class ModelPolicy:
    """``models``: ids always allowed, exactly as written. ``prefixes``: ``<prefix>/<name>`` allowed for these
    (None: every prefix the hub knows). ``urls``: base URLs a raw ``http(s)://base#model`` id may use (None:
    any). ``local_dirs``: directories a ``local:/path`` id may point into (None: anywhere)."""

    models: frozenset[str] = frozenset()
    prefixes: frozenset[str] | None = frozenset()
    urls: frozenset[str] | None = frozenset()
    local_dirs: tuple[str, ...] | None = ()

    @classmethod
    def permissive(cls) -> ModelPolicy:
        """Every id: for the CLI and the library, whose user is the operator."""
        return cls(prefixes=None, urls=None, local_dirs=None)

    @classmethod
    def restrictive(
        cls,
        *,
        models: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        urls: Iterable[str] = (),
        local_dirs: Iterable[str] = (),
    ) -> ModelPolicy:
        return cls(
            models=frozenset(m.strip() for m in models),
            prefixes=frozenset(prefixes),
            urls=frozenset(normalize_base_url(u) for u in urls),
            local_dirs=tuple(_absolute(d) for d in local_dirs),
        )

    @property
    def is_permissive(self) -> bool:
        return self.prefixes is None and self.urls is None and self.local_dirs is None

    def check(self, model_id: str) -> None:
        """Raise ``ModelNotAllowedError`` unless this id may be resolved. The hub asks only about prefixes it
        knows: an unknown one names nothing, allowed or not, and is its own error."""
        if self.is_permissive or model_id in self.models:
            return
        if is_url(model_id):
            base = model_id.partition("#")[0]
            if self.urls is None or normalize_base_url(base) in self.urls:
                return
            raise ModelNotAllowedError(
                f"model '{model_id[:_SHOWN]}' is not allowed here: raw URLs are refused unless the base URL is "
                "listed in [server] allow_model_urls; use a configured provider prefix or a preset"
            )
        if model_id.startswith("local:"):
            if self.local_dirs is None or self._inside_local_dirs(model_id[len("local:") :]):
                return
            raise ModelNotAllowedError(
                f"model '{model_id[:_SHOWN]}' is not allowed here: local paths are refused unless they are "
                "inside a directory listed in [server] local_model_dirs"
            )
        prefix, sep, _ = model_id.partition("/")
        if sep and self.prefixes is not None and prefix not in self.prefixes:
            raise ModelNotAllowedError(
                f"model '{model_id[:_SHOWN]}' is not allowed here: provider '{prefix[:40]}' is not configured "
                f"on this server; allowed prefixes: {', '.join(sorted(self.prefixes)) or 'none'}"
            )

    def _inside_local_dirs(self, path: str) -> bool:
        if not self.local_dirs:
            return False  # nothing allowed: decide without touching the file system
        lexical = _absolute(path)
        if not any(_under(lexical, d) for d in self.local_dirs):
            return False
        # Lexically inside: only now resolve symlinks, so that a link in the directory cannot lead out of it.
        real = os.path.realpath(lexical)
        return any(_under(real, os.path.realpath(d)) for d in self.local_dirs)


def _absolute(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)
