"""``polyfuse mcp``: the MCP server for coding agents, on stdio or streamable HTTP (``--http PORT``)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click

from ..config import check_workspace_config, load_config
from ..errors import ConfigError
from ..providers.registry import ProviderHub
from ..redaction import Redactor, provider_keys
from .runlog import opened_log

__all__ = ["mcp"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option(
    "--http", "port", type=click.IntRange(0, 65535), help="Serve streamable HTTP on this port (0: any)."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for --http.")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (default: ./polyfuse.toml)."
)
@click.option(
    "--root", default=".", help="The repository review_diff diffs (default: the current directory)."
)
@click.option("--no-log", is_flag=True, help="Do not record the tools' runs in the run log.")
def mcp(port: int | None, host: str, config_path: str | None, root: str, no_log: bool) -> None:
    """Serve fuse, consult and review_diff as MCP tools (stdio by default; needs the 'mcp' extra)."""
    try:
        import anyio

        from ..mcp import DEPTH_ENV, PolyfuseTools, serve_http, serve_stdio
        from ..mcp.server import ToolError, parse_depth
        from ..server.policy import server_policy
    except ImportError:
        raise ConfigError("polyfuse mcp needs the 'mcp' extra: pip install 'polyfuse[mcp]'") from None
    from importlib.metadata import version

    cfg = load_config(config_path)
    if config_path is None and cfg.source == str(Path.cwd() / "polyfuse.toml"):
        # an agent starts this server in whatever repository it works on: that repository's file is not the user's
        check_workspace_config(cfg, "polyfuse.toml", "polyfuse mcp")
    try:
        depth = parse_depth(os.environ.get(DEPTH_ENV), DEPTH_ENV)
    except ToolError as exc:
        raise ConfigError(str(exc)) from None
    keys = cfg.server.keys()
    if port is not None and not _loopback(host) and not keys:
        raise ConfigError(
            f"refusing to serve MCP on {host} without keys: set [server] api_keys (clients send "
            "Authorization: Bearer <key>) or listen on 127.0.0.1"
        )
    redact = Redactor([*provider_keys(ProviderHub.from_config(cfg)), *keys])  # kept out of the run log
    with opened_log(cfg, no_log, redact) as runlog:
        # Over HTTP the clients are not necessarily the operator: the server's model policy (no raw URLs or
        # local paths unless the config allows them), as for polyfuse serve.
        policy = None if port is None else server_policy(cfg)
        tools = PolyfuseTools(cfg, root=Path(root), depth=depth, run_log=runlog, policy=policy)
        if port is None:
            anyio.run(serve_stdio, tools, version("polyfuse"), backend="asyncio")
            return
        from .serve import listening_socket

        sock = listening_socket(host, port)
        click.echo(f"polyfuse mcp on http://{host}:{sock.getsockname()[1]}/mcp", err=True)
        anyio.run(
            lambda: serve_http(tools, version("polyfuse"), sock, host=host, keys=keys), backend="asyncio"
        )
