"""polyfuse as Model Context Protocol tools for coding agents (``polyfuse mcp``; needs the 'mcp' extra)."""

from __future__ import annotations

from .server import DEPTH_ENV, PolyfuseTools, build_server, make_hub
from .transport import serve_http, serve_stdio

__all__ = ["DEPTH_ENV", "PolyfuseTools", "build_server", "make_hub", "serve_http", "serve_stdio"]
