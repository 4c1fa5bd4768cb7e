"""``polyfuse serve``: the OpenAI-compatible fusion server and its web panel on uvicorn."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import shutil
import socket
import tempfile

import click

from ..config import load_config
from ..errors import ConfigError
from ..gateway.metrics import MULTIPROC_ENV
from ..gateway.settings import GatewaySettings
from ..server.settings import CONFIG_ENV, NO_LOG_ENV, ServerSettings
from ..store.settings import redact_url
from .runlog import opened_log

__all__ = ["serve", "listening_socket", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound listening socket with TCP_NODELAY, which Linux passes on to every accepted connection: without
    it small writes (one SSE chunk) can wait ~40 ms for a delayed ACK under uvicorn with a given socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (default: ./polyfuse.toml)."
)
@click.option("--access-log", is_flag=True, help="Log every request (off by default: it costs throughput).")
@click.option("--log-level", default="info", show_default=True)
@click.option("--no-log", is_flag=True, help="Do not record fusions in the run log.")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve /v1 without server keys on a non-loopback address (anyone who can reach it may use it).",
)
def serve(
    host: str,
    port: int,
    workers: int,
    config_path: str | None,
    access_log: bool,
    log_level: str,
    no_log: bool,
    insecure_no_auth: bool,
) -> None:
    """Serve the OpenAI-compatible API (POST /v1/chat/completions) and the web panel (GET /)."""
    if importlib.util.find_spec("uvicorn") is None:
        raise ConfigError("polyfuse serve needs the server extra: pip install 'polyfuse[server]'")
    cfg = load_config(config_path)  # fail here with one line, before any worker starts
    if not is_loopback(host) and not cfg.server.keys() and not cfg.gateway.keys and not insecure_no_auth:
        raise ConfigError(
            f"refusing to serve on {host} without server keys: set [server] api_keys or POLYFUSE_SERVER_KEYS "
            "(or [gateway] keys = true), bind 127.0.0.1, or pass --insecure-no-auth"
        )
    with opened_log(cfg, no_log) as runlog:  # likewise a log that cannot be opened
        where = runlog.where if runlog is not None else None
    if where is None and cfg.gateway.keys:  # keys live in the log's database even when runs are not recorded
        with opened_log(cfg.model_copy(update={"log": cfg.log.model_copy(update={"enabled": True})}), False):
            pass
    if config_path:
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    if where is None:
        os.environ[NO_LOG_ENV] = "1"
    metrics_dir = _metrics_dir(cfg.gateway.metrics, workers)
    sock = listening_socket(host, port)
    logged = f"; run log {where}" if where else "; run log off"
    click.echo(
        f"polyfuse serving on http://{host}:{sock.getsockname()[1]} ({workers} worker(s){logged}"
        f"{_gateway_note(cfg.gateway, workers)})",
        err=True,
    )
    try:
        _run(cfg.server, workers, access_log, log_level, sock)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir(metrics: bool, workers: int) -> str | None:
    """Several workers share their metrics through files in a fresh directory (prometheus-client's
    multiprocess mode); it must be set before any worker imports prometheus_client."""
    if not metrics or workers == 1 or os.environ.get(MULTIPROC_ENV):
        return None
    path = tempfile.mkdtemp(prefix="polyfuse-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def _gateway_note(gw: GatewaySettings, workers: int) -> str:
    parts = []
    if gw.keys:
        redis = gw.redis()
        if redis:
            parts.append(f"keys, limits and budgets shared through {redact_url(redis)}")
        else:
            per = (
                f" (with {workers} workers a key can get up to {workers}x its rpm/tpm)" if workers > 1 else ""
            )
            parts.append(
                "keys; no [gateway] redis_url: rate limits hold per worker process only"
                f"{per}, budgets are held in the run-log database"
            )
    if gw.metrics:
        parts.append("metrics at /metrics")
    if gw.cache.enabled:
        parts.append("response cache" if gw.redis() else "response cache off (it needs redis_url)")
    return "; gateway: " + ", ".join(parts) if parts else ""


def _run(
    settings: ServerSettings, workers: int, access_log: bool, log_level: str, sock: socket.socket
) -> None:
    import uvicorn

    from ..server.protocol import uvicorn_config  # the server extra: not needed for the rest of the CLI

    config = uvicorn_config(
        "polyfuse.server.app:app_from_env",
        settings,
        factory=True,
        workers=workers,
        loop="uvloop",
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
    else:
        server.run(sockets=[sock])
