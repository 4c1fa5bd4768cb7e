"""polyfuse as a language server (``polyfuse lsp``): inline completion, a completion fallback, code actions."""

from .server import PolyfuseServer, build_server

__all__ = ["PolyfuseServer", "build_server"]
