"""Helpers for the MCP tests: ``polyfuse mcp`` as a real process, reached with the SDK's own client over stdio
or streamable HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client as sdk_stdio_client
from mcp.client.streamable_http import streamable_http_client

ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "POLYFUSE_DEPTH"}
MCP = [sys.executable, "-m", "polyfuse.cli.main", "mcp", "--no-log"]


@asynccontextmanager
async def stdio_client(
    cwd: Path, config: Path, env: dict[str, str] | None = None, errlog: Path | None = None
) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=MCP[0], args=[*MCP[1:], "--config", str(config)], env={**ENV, **(env or {})}, cwd=cwd
    )
    with open(errlog or cwd / "mcp-stderr.log", "w") as err:  # the server's stderr, for a failing test
        async with Client(sdk_stdio_client(params, errlog=err), read_timeout_seconds=600) as client:
            yield client


class HttpServer:
    """``polyfuse mcp --http 0`` in a subprocess; the port is read from its first stderr line."""

    def __init__(
        self, cwd: Path, config: Path, args: list[str] | None = None, env: dict[str, str] | None = None
    ):
        self.cwd, self.config, self.args, self.env = cwd, config, args or [], env or {}

    def __enter__(self) -> HttpServer:
        self.proc = subprocess.Popen(
            [*MCP, "--config", str(self.config), "--http", "0", *self.args],
            cwd=self.cwd,
            env={**ENV, **self.env},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/mcp", line)
        assert m, f"no address in {line!r}"
        self.url = f"http://127.0.0.1:{m.group(1)}/mcp"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def client(self, headers: dict[str, str] | None = None) -> Client:
        http = httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(30, read=600))
        return Client(streamable_http_client(self.url, http_client=http), read_timeout_seconds=600)


def wait_until(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.02)


def fake_config(
    tmp: Path, upstream_url: str, members: list[str], judge: str | None = None, extra: str = ""
) -> Path:
    pool = ", ".join(f'"{upstream_url}#{m}"' for m in members)
    judge_line = f'judge = "{upstream_url}#{judge}"\n' if judge else ""
    path = tmp / "polyfuse.toml"
    path.write_text(
        f'default_preset = "fake"\n[presets.fake]\npool = [{pool}]\n{judge_line}mode = "vote"\n'
        f'[code]\npool = [{pool}]\n{judge_line}redact = "never"\n{extra}'
    )
    return path
