"""Fault injection: a hostile upstream on loopback behind a real `polyfuse serve` process. Each row is one way
an upstream can be broken or malicious, with what must happen: a pass-through gets a 502 (or 504) in OpenAI
form, or a stream that already started ends with an error chunk; in a fusion the member is listed in
``failed_models`` with its reason and the others' answer comes back. Every row is bounded in time (the
client's timeout) and in memory (the server's peak RSS, from /proc). Before issue 8 these were 500s, dropped
connections, an aborted fusion, an empty answer with finish_reason "stop", a 485 MB peak, or a 901 s wait."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import ServeProcess

MSGS = [{"role": "user", "content": "hi"}]
MEMORY_BOUND_KB = 120_000  # above the server's peak after warm-up; the 200 MB stream once peaked at 485 MB
TIME_BOUND = 20.0  # seconds for any row (the hanging upstream once took 901 s to become a 504)
SSE = "text/event-stream"


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


@dataclass(frozen=True)
class Row:
    behaviour: Behaviour
    status: int  # pass-through, not streamed
    code: str
    stream_status: int  # pass-through, streamed: 200 when the stream had started (then an error chunk)
    reason: str  # in the fused answer's failed_models


BIG_CHUNK = sse(b'{"choices": [{"delta": {"content": "' + b"x" * 65000 + b'"}}]}')
ROWS: dict[str, Row] = {
    "sse data is a list": Row(
        Behaviour(body=sse(b"[1,2,3]"), content_type=SSE),
        502,
        "upstream_malformed_response",
        502,
        "malformed",
    ),
    "invalid utf-8": Row(
        Behaviour(body=sse(b'{"choices": [{"delta": {"content": "\xff\xfe"}}]}'), content_type=SSE),
        502,
        "upstream_malformed_response",
        502,
        "UTF-8",
    ),
    "a 5 MB line": Row(
        Behaviour(body=b"data: " + b"y" * 5_000_000 + b"\n\n", content_type=SSE),
        502,
        "upstream_malformed_response",
        502,
        "exceeds",
    ),
    "200 with body 5": Row(Behaviour(body=b"5"), 502, "upstream_malformed_response", 502, "malformed"),
    "choices of strings": Row(
        Behaviour(body=b'{"choices": ["x"]}'), 502, "upstream_malformed_response", 502, "malformed"
    ),
    "usage is a word": Row(
        Behaviour(body=b'{"choices": [{"message": {"content": "hi"}}], "usage": "many"}'),
        502,
        "upstream_malformed_response",
        502,
        "malformed",
    ),
    "usage is a word, streamed": Row(
        Behaviour(
            body=sse(b'{"choices": [{"delta": {"content": "hi"}}], "usage": "many"}'), content_type=SSE
        ),
        502,
        "upstream_malformed_response",
        502,
        "malformed",
    ),
    "garbage stream": Row(
        Behaviour(body=b"\x00\x01garbage\nmore: garbage\n\n", content_type=SSE),
        502,
        "upstream_malformed_response",
        502,
        "malformed",
    ),
    "stream without content": Row(
        Behaviour(body=sse(b'{"choices": [{"delta": {}}]}') + sse(b"[DONE]"), content_type=SSE),
        502,
        "upstream_malformed_response",
        502,
        "no content",
    ),
    "a 200 MB stream": Row(
        Behaviour(body=BIG_CHUNK, repeat=3200, content_type=SSE),
        502,
        "upstream_malformed_response",
        200,
        "exceeds",
    ),
    "hangs": Row(Behaviour(hang=True), 504, "upstream_timeout", 504, "no answer within the member timeout"),
    "drips": Row(
        Behaviour(
            body=sse(b'{"choices": [{"delta": {"content": "."}}]}'), repeat=1000, drip=0.4, content_type=SSE
        ),
        504,
        "upstream_timeout",
        200,
        "no answer within the member timeout",
    ),
}


@pytest.fixture(scope="module")
def upstream():
    behaviours = {"good": Behaviour(text="A sound answer.")}
    behaviours.update({name.replace(" ", "-"): row.behaviour for name, row in ROWS.items()})
    with FakeUpstream(behaviours) as up:
        yield up


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    config = f"""
[server]
passthrough_timeout = 2.0

[providers.up]
base_url = "{upstream.base_url}"
max_retries = 1

[presets.pair]
pool = ["up/good", "up/good"]
mode = "vote"
member_timeout = 2.0
"""
    with ServeProcess(tmp_path_factory.mktemp("hostile"), config) as srv:
        with httpx.Client(timeout=10) as warm:  # the baseline includes a served request of each kind
            for stream in (False, True):
                warm.post(
                    srv.url + "/v1/chat/completions",
                    json={"model": "up/good", "messages": MSGS, "stream": stream},
                )
        srv.peak_baseline = peak(srv)  # type: ignore[attr-defined]
        yield srv


def peak(srv: ServeProcess) -> int:
    assert srv.proc is not None
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def call(srv: ServeProcess, body: dict) -> httpx.Response:
    with httpx.Client(timeout=TIME_BOUND) as client:  # the row's time bound: a slower answer fails the row
        return client.post(srv.url + "/v1/chat/completions", json=body)


def check_memory(srv: ServeProcess) -> None:
    grown = peak(srv) - srv.peak_baseline  # type: ignore[attr-defined]
    assert grown < MEMORY_BOUND_KB, f"peak RSS grew by {grown} kB"


@pytest.mark.parametrize("case", list(ROWS))
def test_pass_through(server, case):
    row = ROWS[case]
    r = call(server, {"model": "up/" + case.replace(" ", "-"), "messages": MSGS})
    assert r.status_code == row.status, r.text[:500]
    err = r.json()["error"]
    assert err["code"] == row.code and err["type"] == "upstream_error" and err["message"], err
    check_memory(server)


@pytest.mark.parametrize("case", list(ROWS))
def test_pass_through_streamed(server, case):
    row = ROWS[case]
    r = call(server, {"model": "up/" + case.replace(" ", "-"), "messages": MSGS, "stream": True})
    assert r.status_code == row.stream_status, r.text[:500]
    if row.stream_status != 200:
        assert r.json()["error"]["code"] in (row.code, "upstream_malformed_response")
    else:  # the stream had begun: it ends with an error chunk, never with finish_reason "stop"
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        last = chunks[-1]
        assert last["choices"][0]["finish_reason"] == "error" and last["error"]["code"] in (
            "upstream_malformed_response",
            "upstream_timeout",
        ), last
        assert not any(c["choices"][0].get("finish_reason") == "stop" for c in chunks)
        assert r.text.rstrip().endswith("data: [DONE]")
    check_memory(server)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", list(ROWS))
def test_fusion_lists_the_member_and_goes_on(server, case, stream):
    member = "up/" + case.replace(" ", "-")
    body = {
        "model": "polyfuse/pair",
        "messages": MSGS,
        "stream": stream,
        "fusion": {"pool": ["up/good", member]},
    }
    r = call(server, body)
    assert r.status_code == 200, r.text[:500]
    if stream:
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        answer = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        fusion = chunks[-1]["fusion"]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    else:
        answer = r.json()["choices"][0]["message"]["content"]
        fusion = r.json()["fusion"]
    assert answer == "A sound answer."
    [failed] = fusion["failed_models"]
    assert failed["member"] == member and row_reason(case) in failed["reason"], failed
    check_memory(server)


def row_reason(case: str) -> str:
    return ROWS[case].reason
