"""`polyfuse serve` as a command: several workers share one port; mistakes are one line and exit 2."""

from __future__ import annotations

import socket
import subprocess

import httpx

from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import POLYFUSE, ServeProcess


def test_serve_with_two_workers_answers(tmp_path):
    with FakeUpstream({"a": Behaviour(text="from a worker")}) as up:
        config = f'[providers.up]\nbase_url = "{up.base_url}"\n'
        with ServeProcess(tmp_path, config, workers=2) as srv:
            for _ in range(6):
                r = httpx.post(
                    srv.url + "/v1/chat/completions",
                    json={"model": "up/a", "messages": [{"role": "user", "content": "hi"}]},
                    timeout=30,
                )
                assert (
                    r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "from a worker"
                )
            assert srv.logs().count("Application startup complete") == 2


def test_serve_mistakes_are_one_line_and_exit_2(tmp_path):
    missing = subprocess.run(
        [POLYFUSE, "serve", "--config", str(tmp_path / "nope.toml")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nmax_body_bytes = 'lots'\n")
    invalid = subprocess.run([POLYFUSE, "serve", "--config", str(bad)], capture_output=True, text=True)
    assert invalid.returncode == 2 and "server.max_body_bytes" in invalid.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [POLYFUSE, "serve", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
