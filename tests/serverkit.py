"""Helpers for the server tests: the app on uvicorn in a thread, or `polyfuse serve` as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from polyfuse.cli.serve import listening_socket
from polyfuse.server.protocol import uvicorn_config

POLYFUSE = str(Path(sys.executable).with_name("polyfuse"))


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread (for tests that need a scripted hub)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = listening_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        settings = getattr(getattr(app, "state", None), "settings", None)
        kw: dict[str, Any] = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 1}
        # the polyfuse app runs under the same connection limits as `polyfuse serve`
        config = uvicorn_config(app, settings, **kw) if settings is not None else uvicorn.Config(app, **kw)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ServeProcess:
    """`polyfuse serve --port 0 --config FILE` in a subprocess; the port is read from its first line."""

    def __init__(
        self,
        tmp: Path,
        config_text: str,
        env: dict[str, str] | None = None,
        workers: int = 1,
        args: list[str] | None = None,
    ) -> None:
        self.args = args or []
        self.config = tmp / "polyfuse.toml"
        self.config.write_text(config_text)
        self.log = tmp / "serve.log"
        self.env = {**os.environ, **(env or {})}
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServeProcess:
        argv = [
            POLYFUSE,
            "serve",
            "--port",
            "0",
            "--config",
            str(self.config),
            "--workers",
            str(self.workers),
            *self.args,
        ]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), env=self.env
        )
        deadline = time.time() + 60
        while True:
            text = self.log.read_text()
            found = re.search(r"serving on http://[^ ]*:(\d+) ", text)
            if found and text.count("startup complete") >= self.workers:  # every worker is up
                self.port = int(found.group(1))
                return self
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"polyfuse serve did not start:\n{text}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        return self.log.read_text()
