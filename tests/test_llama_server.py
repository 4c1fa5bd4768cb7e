"""The HTTP provider against a real OpenAI-compatible server: llama-cpp-python's ``llama_cpp.server``,
started on 127.0.0.1 by the fixture with the bundled SmolLM2 model."""

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from polyfuse import FusionRequest, fuse, load_config
from polyfuse.providers.local import bundled_path
from polyfuse.providers.registry import ProviderHub
from polyfuse.types import GenerationParams, Message

pytestmark = pytest.mark.local


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(bundled_path("smollm2-135m")),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            str(os.cpu_count() or 2),
            # by default a new request interrupts the one in flight; a pool sends several at once
            "--interrupt_requests",
            "False",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("llama_cpp.server did not start in 120s")
        time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


MSGS = [Message(role="user", content="What is the capital of France?")]


async def test_non_streaming_and_streaming_against_llama_server(llama_server):
    async with ProviderHub.from_config(load_config(data={}), env={}) as hub:
        model = hub.model(f"{llama_server}#smollm2")
        c = await model.complete(MSGS, GenerationParams(temperature=0, max_tokens=24))
        events = [e async for e in model.stream(MSGS, GenerationParams(temperature=0, max_tokens=24))]
    assert c.text.strip() and c.usage.prompt_tokens > 5 and 0 < c.usage.completion_tokens <= 24
    assert c.model == "smollm2" and c.cost is None  # unknown price: reported as unknown, not as 0
    final = events[-1]
    assert "".join(e.text for e in events[:-1]) == final.text and final.text.strip()
    assert final.ttft is not None and final.latency >= final.ttft
    assert final.text == c.text  # greedy decoding: the same answer both ways


@pytest.mark.parametrize("mode", ["best-of", "merge", "debate", "vote"])
async def test_fusion_over_http_on_a_real_server(llama_server, mode):
    pool = f"{llama_server}#smollm2*2"
    request = FusionRequest.from_prompt(
        "What is the capital of France?",
        pool,
        judge=f"{llama_server}#smollm2",
        mode=mode,
        rounds=1,
    )
    request.params.max_tokens = 40
    request.judge_params.max_tokens = 300
    async with ProviderHub.from_config(load_config(data={}), env={}) as hub:
        result = await fuse(request, hub)
    assert result.answer.strip()
    assert [c.member for c in result.candidates] == [f"{llama_server}#smollm2#1", f"{llama_server}#smollm2#2"]
    assert all(c.ok and c.usage.completion_tokens > 0 for c in result.candidates)
    if mode != "vote":
        assert result.judge_calls and result.judge_calls[0].usage.completion_tokens > 0
        # the server refuses OpenAI's json_schema form with a 500; the provider steps down to llama.cpp's
        # json_object+schema, so the judge decodes under the grammar and its verdict parses
        assert not result.verdict.judge_failed, result.verdict.failure_reason
        assert len(result.judge_calls) == 1


async def test_raw_prompt_completion_against_llama_server(llama_server):
    async with ProviderHub.from_config(load_config(data={}), env={}) as hub:
        model = hub.model(f"{llama_server}#smollm2")
        events = [
            e
            async for e in model.stream_text(
                "def add(a, b):\n    return", GenerationParams(temperature=0, max_tokens=8, stop=["\n"])
            )
        ]
    final = events[-1]
    assert final.text.strip() and "\n" not in final.text
    assert "".join(e.text for e in events[:-1]) == final.text
