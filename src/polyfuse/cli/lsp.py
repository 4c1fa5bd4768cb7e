"""``polyfuse lsp``: the language server over stdio."""

from __future__ import annotations

import click

__all__ = ["lsp"]


@click.command()
@click.option("--config", "config_path", help="Config file (default: polyfuse.toml in the workspace root).")
def lsp(config_path: str | None) -> None:
    """Run the polyfuse language server on stdin/stdout (needs the 'lsp' extra)."""
    try:
        from ..lsp import build_server
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError("the language server needs the 'lsp' extra: pip install 'polyfuse[lsp]'") from None
    build_server(config_path).start_io()
