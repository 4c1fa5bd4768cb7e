"""``POST /v1/completions`` through the official openai SDK (``completions.create(..., suffix=...)``) against a
real ``polyfuse serve`` process, its models a real OpenAI-compatible upstream on loopback: fused completion for
a preset (the same checks as ``polyfuse code complete``, the fused answer on the same request again), single
model pass-through (raw prompt when the upstream takes one), a FIM prompt rendered by the client (as Continue
sends it), streaming and not, bad input as 400 in OpenAI form, and a client that leaves cancelling every call."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import openai
import pytest

from conftest import upstream_picker
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import ServeProcess

KEY = "server-key-7"
PREFIX = 'def add(a, b):\n    """Add.\n\n    >>> add(2, 3)\n    5\n    """\n    '
SUFFIX = "\n\n\nprint(add(1, 2))\n"
QUICK = "```python\nreturn a + b\n```"
SUM = "```python\nreturn sum((a, b))\n```"
# What Continue sends for a model it has no template for (its stableCode template, rendered client-side).
CONTINUE = f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
CONTINUE_STOPS = [
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    "<file_sep>",
    "<|endoftext|>",
    "</fim_middle>",
]


@pytest.fixture(scope="module")
def upstream():
    behaviours = {
        "quick": Behaviour(text=QUICK),
        "later": Behaviour(text=SUM, latency=1.0),
        "later2": Behaviour(text=SUM, latency=1.0),
        "broken": Behaviour(text="```python\nreturn a +* b\n```"),
        "wrong": Behaviour(text="```python\nreturn a - b\n```"),
        "judge": Behaviour(reply=upstream_picker("sum(")),
        "slow": Behaviour(text=SUM, latency=30),
        "base": Behaviour(text="    return a + b\n", chunks=5),
    }
    with FakeUpstream(behaviours) as up:
        yield up


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    config = f"""
[server]
api_keys = ["{KEY}"]

[providers.up]
base_url = "{upstream.base_url}"
max_retries = 0

[providers.raw]
base_url = "{upstream.base_url}"
max_retries = 0
text_completion = true

[presets.coders]
pool = ["up/quick", "up/later", "up/later2"]
judge = "up/judge"

[presets.checked]
pool = ["up/broken", "up/wrong", "up/later"]
judge = "up/judge"

[presets.slow]
pool = ["up/slow", "up/slow"]
judge = "up/judge"

[code]
latency_budget = 20
"""
    with ServeProcess(tmp_path_factory.mktemp("serve"), config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"{what} did not happen within {timeout:g}s"
        time.sleep(0.02)


def test_a_preset_answers_fast_then_fused_on_the_same_request(client, upstream):
    first = client.completions.create(model="polyfuse/coders", prompt=PREFIX, suffix=SUFFIX, max_tokens=32)
    assert first.object == "text_completion" and first.model == "polyfuse/coders"
    assert first.choices[0].text == "return a + b" and first.choices[0].finish_reason == "stop"
    info = first.model_extra["polyfuse"]
    assert info["mode"] == "fast" and info["member"] == "up/quick"
    sent = [r for r in upstream.requests if r["model"] == "quick"][-1]["messages"][-1]["content"]
    assert "<FILL_HERE>" in sent and "print(add(1, 2))" in sent  # each member in its own FIM format
    _until(lambda: upstream.active == 0 and upstream.requests[-1]["model"] == "judge", "the fusion")
    calls = len(upstream.requests)
    fused = client.completions.create(model="polyfuse/coders", prompt=PREFIX, suffix=SUFFIX, max_tokens=32)
    assert fused.choices[0].text == "return sum((a, b))"
    assert fused.model_extra["polyfuse"]["mode"] == "fused"
    assert fused.model_extra["polyfuse"]["member"] in ("up/later", "up/later2")
    assert fused.model_extra["polyfuse"]["run"] == info["run"] and len(upstream.requests) == calls


def test_the_checks_of_code_complete_apply(client):
    r = client.completions.create(model="polyfuse/checked", prompt=PREFIX, suffix=SUFFIX, max_tokens=32)
    # broken does not parse, wrong fails the docstring's example: the slower right one answers
    assert r.choices[0].text == "return sum((a, b))" and r.model_extra["polyfuse"]["member"] == "up/later"


def test_streaming_a_fused_completion(client):
    chunks = list(
        client.completions.create(
            model="polyfuse/coders", prompt=PREFIX, suffix=SUFFIX, max_tokens=31, stream=True
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == "return a + b"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens > 0


def test_a_fim_prompt_rendered_by_the_client_is_taken_apart(client, upstream):
    r = client.completions.create(
        model="polyfuse/coders", prompt=CONTINUE, max_tokens=32, stop=CONTINUE_STOPS
    )
    assert r.choices[0].text == "return a + b"
    sent = [r for r in upstream.requests if r["model"] == "quick"][-1]["messages"][-1]["content"]
    assert "<fim_prefix>" not in sent and "def add(a, b):" in sent and "print(add(1, 2))" in sent


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_single_chat_model_gets_the_hole_filling_prompt(client, upstream, stream):
    r = client.completions.create(
        model="up/quick", prompt=PREFIX, suffix=SUFFIX, max_tokens=20, stream=stream
    )
    chunks = list(r) if stream else [r]
    assert "".join(c.choices[0].text for c in chunks) == "return a + b"
    body = upstream.requests[-1]
    assert body["_path"].endswith("/chat/completions") and body["max_tokens"] == 20


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_raw_prompt_passes_through_to_an_upstream_that_takes_one(client, upstream, stream):
    r = client.completions.create(
        model="raw/base",
        prompt="def add(a, b):\n",
        max_tokens=12,
        stop=["\n\n"],
        temperature=0.2,
        stream=stream,
    )
    chunks = list(r) if stream else [r]
    assert "".join(c.choices[0].text for c in chunks) == "    return a + b\n"
    if stream:
        assert len([c for c in chunks if c.choices[0].text]) > 1  # token by token, as the upstream sent it
    body = upstream.requests[-1]
    assert body["_path"].endswith("/completions") and not body["_path"].endswith("/chat/completions")
    assert (body["prompt"], body["max_tokens"], body["stop"], body["temperature"]) == (
        "def add(a, b):\n",
        12,
        ["\n\n"],
        0.2,
    )


def test_a_client_rendered_fim_prompt_goes_raw_to_a_raw_upstream(client, upstream):
    client.completions.create(model="raw/base", prompt=CONTINUE, max_tokens=12, stop=CONTINUE_STOPS)
    assert upstream.requests[-1]["prompt"] == CONTINUE  # the client chose the model's format: untouched


def _post(server, body: dict) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )


@pytest.mark.parametrize(
    "body, param, text",
    [
        ({"model": "polyfuse/coders"}, "prompt", "Field required"),
        ({"model": "up/quick", "prompt": ["a", "b"]}, "prompt", "too many prompts: one per request, got 2"),
        ({"model": "up/quick", "prompt": [1, 2, 3]}, "prompt", "token arrays are not supported"),
        ({"model": "up/quick", "prompt": "x", "n": 2}, "n", "n must be 1"),
        ({"model": "up/quick", "prompt": "x", "best_of": 3}, "best_of", "best_of is not supported"),
        ({"model": "up/quick", "prompt": "x", "suffix": "y", "echo": True}, "echo", "echo cannot be used"),
        ({"model": "up/quick", "prompt": "x", "logprobs": 2}, "logprobs", "logprobs are not supported"),
        ({"model": "up/quick", "prompt": "x", "stop": ["s"] * 17}, "stop", "at most 16 sequences"),
        ({"model": "up/quick", "prompt": "x", "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"model": "up/quick", "prompt": "x", "temperature": "hot"}, "temperature", "valid number"),
        ({"model": "polyfuse/nope", "prompt": "x"}, None, "unknown preset 'nope'"),
        # the server's model policy, as for chat: no raw URL, no file path a client picks
        ({"model": "http://127.0.0.1:9/v1#x", "prompt": "x"}, "model", "is not allowed here"),
        ({"model": "local:/etc/passwd", "prompt": "x", "suffix": "y"}, "model", "is not allowed here"),
    ],
)
def test_bad_input_is_a_400_in_openai_form(server, body, param, text):
    r = _post(server, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code", "param"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and text in error["message"]


def test_bad_input_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="up/quick", prompt=["one", "two"], max_tokens=5)
    assert info.value.body["code"] == "too_many_prompts"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nowhere/model", prompt="x", max_tokens=5)


def test_a_client_that_leaves_cancels_every_upstream_call(server, upstream):
    before = upstream.disconnects
    body = json.dumps({"model": "polyfuse/slow", "prompt": PREFIX, "suffix": SUFFIX, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        _until(lambda: upstream.active == 2, "both members called")
    _until(lambda: upstream.active == 0, "every upstream call ending")
    assert upstream.disconnects - before == 2


@pytest.mark.local
def test_the_bundled_models_through_polyfuse_serve(tmp_path):
    config = "[server]\n\n[code]\nlatency_budget = 120\ncomplete_max_tokens = 16\n[log]\nenabled = false\n"
    with ServeProcess(tmp_path, config) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=600)
        fused = client.completions.create(model="polyfuse/local", prompt=PREFIX, suffix=SUFFIX, max_tokens=16)
        info = fused.model_extra["polyfuse"]
        if info["mode"] == "none":  # tiny models may write nothing that passes the checks: said, not failed
            assert fused.choices[0].text == "" and "no candidate passed" in info["reason"]
        else:
            assert fused.choices[0].text.strip() and info["model"] in (
                "local/smollm2-135m",
                "local/gemma3-270m",
            )
        chunks = list(
            client.completions.create(
                model="local/gemma3-270m", prompt="def add(a, b):\n", max_tokens=8, stream=True
            )
        )
        assert "".join(c.choices[0].text for c in chunks).strip()  # a base model continues a raw prompt
        assert chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens > 0


@pytest.mark.local
async def test_preload_loads_the_in_process_models_of_a_preset():
    from polyfuse.config import load_config
    from polyfuse.providers.registry import ProviderHub
    from polyfuse.server.preload import preload

    config = load_config(data={"server": {"preload": ["polyfuse/local"]}})
    async with ProviderHub.from_config(config) as hub:
        await preload(config, hub)
        engines = {path.name for path in hub.local_runtime._engines}
    assert engines == {"SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"}


def test_the_sandbox_runs_candidate_code_under_uvloop():
    """polyfuse serve runs on uvloop, which cannot start a process as another user: the checks still run."""
    import uvloop

    from polyfuse.code.sandbox import run_python

    async def both() -> tuple[str, bool]:
        ok = await run_python("print(6 * 7)")
        slow = asyncio.ensure_future(run_python("import time; time.sleep(60)"))
        await asyncio.sleep(0.5)
        slow.cancel()
        cancelled = await asyncio.wait_for(asyncio.gather(slow, return_exceptions=True), 30)
        return ok.stdout.strip(), isinstance(cancelled[0], asyncio.CancelledError)

    assert uvloop.run(both()) == ("42", True)
