"""`polyfuse serve` under hostile clients, as a real process on loopback: safe defaults (auth on a public
address, JSON-only /v1 bodies, the panel's CSP), bounded headers, connections and slow requests, and a pool or
a repeat count too big to expand. Each case below failed before issue 8 (a 500, unbounded memory, or a server
that stopped answering); memory is read from the server's own /proc entry."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import POLYFUSE, ServeProcess

MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream({"ok": Behaviour(text="fine")}) as up:
        yield up


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream):
    config = f"""
[server]
header_timeout = 1.0
body_timeout = 1.0
max_connections = 40
max_header_bytes = 16384
max_headers = 50

[providers.fake]
base_url = "{upstream.base_url}"
max_retries = 0

[presets.duo]
pool = ["fake/ok", "fake/ok"]
mode = "vote"
"""
    with ServeProcess(tmp_path_factory.mktemp("limits"), config) as srv:
        yield srv


def status(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def post(url: str, body: object, **kw: object) -> httpx.Response:
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.post(
        url + "/v1/chat/completions", content=json.dumps(body), headers=headers, timeout=20, **kw
    )


def assert_openai_error(r: httpx.Response, status_code: int, code: str) -> None:
    assert r.status_code == status_code, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"], err


def raw_exchange(port: int, payload: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, return whatever the server answers before it closes (or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(payload)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


# -- safe defaults --------------------------------------------------------------------------------------------
def test_public_bind_without_keys_refuses_to_start(tmp_path):
    config = tmp_path / "p.toml"
    config.write_text("")
    env = {"POLYFUSE_SERVER_KEYS": ""}
    run = subprocess.run(
        [POLYFUSE, "serve", "--host", "0.0.0.0", "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, **env},
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert (
        "refusing to serve on 0.0.0.0 without server keys" in run.stderr
        and "--insecure-no-auth" in run.stderr
    )


def test_public_bind_with_insecure_no_auth_starts(tmp_path):
    with ServeProcess(tmp_path, "", args=["--host", "0.0.0.0", "--insecure-no-auth"]) as srv:
        assert httpx.get(srv.url + "/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_v1_bodies_must_be_json(server, upstream, content_type):
    before = len(upstream.requests)
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=json.dumps({"model": "fake/ok", "messages": MSGS}).encode(),
        headers=headers,
        timeout=10,
    )
    assert_openai_error(r, 415, "unsupported_media_type")
    assert len(upstream.requests) == before  # refused before anything ran
    ok = post(
        server.url,
        {"model": "fake/ok", "messages": MSGS},
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


def test_the_panel_is_served_with_a_csp_and_no_framing(server):
    for path in ("/", "/static/panel.js", "/static/panel.css"):
        r = httpx.get(server.url + path, timeout=10)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("value", ["\u00b2".encode("latin-1"), "٣".encode(), b"-1", b"1e3", b"9" * 40])
def test_a_non_ascii_or_odd_depth_header_is_a_400(server, value):
    # before: '²'.isdigit() is True and int('²') raises: a plain-text 500
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Polyfuse-Depth: " + value + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    answer = raw_exchange(server.port, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"param":"x-polyfuse-depth"' in answer.replace(b" ", b"")


# -- pool sizes and member options --------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["fake/ok*10000000", "fake/ok*" + "9" * 5000, ["fake/ok"] * 5000])
def test_a_huge_pool_is_refused_before_expansion(server, pool):
    # before: 'fake/ok*10000000' blocked the event loop 44 s and peaked at 4.35 GB; 5000 digits was a 500
    before = status(server.proc.pid, "VmHWM")
    r = post(server.url, {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"pool": pool}})
    assert_openai_error(r, 400, "too_many_members")
    assert r.json()["error"]["param"] == "fusion.pool"
    assert status(server.proc.pid, "VmHWM") - before < 20_000  # kB: nothing was expanded
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "member, text",
    [
        ("fake/ok?temperature=nan", "finite number"),
        ("fake/ok?temperature=inf", "finite number"),
        ("fake/ok?max_tokens=-5", "greater than or equal to 1"),
        ("fake/ok?top_p=7", "less than or equal to 1"),
    ],
)
def test_member_options_are_validated_with_a_400(server, member, text):
    # before: nan and -5 reached GenerationParams inside the dispatch: a plain-text 500
    r = post(server.url, {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"pool": [member, "fake/ok"]}})
    assert_openai_error(r, 400, "invalid_value")
    assert text in r.json()["error"]["message"]


# -- headers, slow and idle connections ----------------------------------------------------------------------------
def test_an_oversized_header_is_refused_without_buffering_it(server):
    # before: 20 connections each sending an unfinished 50 MB header took RSS from 220 MB to 1.48 GB
    pid = server.proc.pid
    before = status(pid, "VmHWM")
    socks = []
    refused = 0
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(50 * 16):  # up to 50 MB in 64 kB pieces; the server stops reading long before
                s.sendall(b"a" * 65536)
        except OSError:
            refused += 1
        socks.append(s)
    answers = []
    for s in socks:
        try:
            answers.append(s.recv(4096))
        except OSError:
            answers.append(b"")
        s.close()
    assert sum(a.startswith(b"HTTP/1.1 431") for a in answers) + refused >= 20
    assert status(pid, "VmHWM") - before < 50_000  # kB
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200


def test_too_many_headers_is_a_431(server):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(60))
    answer = raw_exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431") and b"too_many_headers" in answer


def test_idle_and_slow_header_connections_are_closed(server):
    # before: idle, slow-header and slow-body connections were never closed
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
        started = time.monotonic()
        assert idle.recv(100) == b""  # closed by the server, silently: nothing was asked
        assert time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.3)
        slow.sendall(b"X-Slow: 1\r\n")  # ... and never the blank line
        assert slow.recv(4096).startswith(b"HTTP/1.1 408")


def test_a_slow_body_is_a_408_and_the_connection_closes(server):
    started = time.monotonic()
    answer = raw_exchange(
        server.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{",
        wait=8,
    )
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert time.monotonic() - started < 7  # the server closed it: raw_exchange did not wait for its timeout


def test_connections_beyond_the_cap_get_a_clean_503_and_health_recovers(server):
    # before: with ulimit -n 1024 the server stopped answering /health after 1,005 idle sockets
    pid = server.proc.pid
    baseline = fds(pid)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(60)]
    try:
        r = httpx.get(server.url + "/health", timeout=5)
        assert_openai_error(r, 503, "too_many_connections")
        assert fds(pid) <= baseline + 41  # the cap (40) plus the listening slack, not 60
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    while fds(pid) > baseline + 2:
        assert time.monotonic() < deadline, (fds(pid), baseline)
        time.sleep(0.1)


@pytest.mark.parametrize(
    "field, value",
    [
        ("member_timeout", "Infinity"),
        ("straggler_grace", "NaN"),
        ("max_cost", "Infinity"),
        ("member_timeout", "1e9"),
    ],
)
def test_fusion_numbers_must_be_finite_and_sane(server, field, value):
    raw = '{"model": "polyfuse/duo", "messages": [{"role": "user", "content": "hi"}], "fusion": {"%s": %s}}'
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=raw % (field, value),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert_openai_error(r, 400, "invalid_value")
    assert r.json()["error"]["param"] == f"fusion.{field}"
