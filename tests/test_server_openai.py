"""The official openai SDK against a real `polyfuse serve` process on loopback, whose models are a real
OpenAI-compatible upstream (FakeUpstream) in this process: fusion and pass-through, streaming, errors,
OpenRouter's `models` fallback, disconnects, the recursion guard and provider-key secrecy."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from conftest import choose_json, write_json
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import ServeProcess

SERVER_KEY = "server-key-1"
PROVIDER_KEY = "sk-provider-SECRET-4242"
A = "Paris is the capital of France."
B = "The capital of France is Paris."
FUSED = "Paris is the capital of France, fused from both answers."
ALWAYS = [500] * 10_000


@pytest.fixture(scope="module")
def upstream():
    behaviours = {
        "a": Behaviour(text=A, cost=0.001),
        "b": Behaviour(text=B, cost=0.002),
        "down": Behaviour(statuses=ALWAYS),
        "judge-merge": Behaviour(text=write_json(FUSED, agreement=0.9), cost=0.0005, chunks=12),
        "judge-pick": Behaviour(text=choose_json(["A", "B"], "A"), cost=0.0005),
        "judge-json": Behaviour(
            text=json.dumps({"agreement": 0.8, "answer": {"city": "Paris"}, "scores": {}}), chunks=6
        ),
        "slow1": Behaviour(text="late", latency=30),
        "slow2": Behaviour(text="later", latency=30),
        "midstream": Behaviour(text="partial answer then trouble", midstream_error=True),
        "leak": Behaviour(
            statuses=[401] * 10_000,
            error_body={"error": {"code": 401, "message": f"invalid key {PROVIDER_KEY} for this account"}},
        ),
    }
    with FakeUpstream(behaviours) as up:
        yield up


def config_text(up: FakeUpstream) -> str:
    return f"""
[server]
api_keys = ["{SERVER_KEY}"]

[providers.up]
base_url = "{up.base_url}"
api_key = "{PROVIDER_KEY}"
max_retries = 0

[presets.trio]
pool = ["up/a", "up/b", "up/down"]
judge = "up/judge-merge"
mode = "merge"

[presets.pick]
pool = ["up/a", "up/b"]
judge = "up/judge-pick"
mode = "best-of"

[presets.shaped]
pool = ["up/a", "up/b"]
judge = "up/judge-json"
mode = "merge"

[presets.slow]
pool = ["up/slow1", "up/slow2"]
judge = "up/judge-merge"
mode = "merge"

[prices."up/a"]
input = 1.0
output = 2.0

[prices."up/judge-merge"]
input = 1.0
output = 2.0
"""


@pytest.fixture(scope="module")
def server(upstream, tmp_path_factory):
    with ServeProcess(tmp_path_factory.mktemp("serve"), config_text(upstream)) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=SERVER_KEY, max_retries=0, timeout=30)


def ask(text: str = "What is the capital of France?") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_pass_through_non_streaming_carries_usage_cost(client):
    r = client.chat.completions.create(model="up/a", messages=ask(), temperature=0.3, max_tokens=20, seed=7)
    assert r.choices[0].message.content == A
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "up/a"
    assert r.usage.completion_tokens == len(A.split())
    assert r.usage.model_extra["cost"] == pytest.approx(0.001)


def test_pass_through_forwards_sampling_options(client, upstream):
    client.chat.completions.create(
        model="up/b", messages=ask("options?"), temperature=0.25, max_tokens=33, seed=11, stop=["\n"]
    )
    body = next(r for r in reversed(upstream.requests) if r["messages"][-1]["content"] == "options?")
    assert (body["temperature"], body["max_tokens"], body["seed"], body["stop"]) == (0.25, 33, 11, ["\n"])


def test_pass_through_streaming(client):
    chunks = list(client.chat.completions.create(model="up/a", messages=ask(), stream=True))
    assert all(c.object == "chat.completion.chunk" and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == A
    assert len([c for c in chunks if c.choices[0].delta.content]) > 1
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage.total_tokens > 0 and last.usage.model_extra["cost"] == pytest.approx(0.001)


def test_stop_and_response_format_reach_members_and_shape_the_fused_answer(client, upstream):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    r = client.chat.completions.create(model="polyfuse/shaped", messages=ask("city?"), response_format=fmt)
    assert json.loads(r.choices[0].message.content) == {"city": "Paris"}
    bodies = {b["model"]: b for b in upstream.requests[-3:]}
    assert bodies["a"]["response_format"]["json_schema"]["schema"] == schema
    judge_format = bodies["judge-json"]["response_format"]["json_schema"]["schema"]
    assert judge_format["properties"]["answer"] == schema  # the judge must write an answer of that schema
    r = client.chat.completions.create(model="polyfuse/trio", messages=ask(), stop=[", fused"])
    assert r.choices[0].message.content == "Paris is the capital of France"
    members = [b for b in upstream.requests[-4:] if b["model"] in ("a", "b")]
    assert len(members) == 2 and all(b["stop"] == [", fused"] for b in members)
    judge = next(b for b in upstream.requests[-4:] if b["model"] == "judge-merge")
    assert "stop" not in judge  # the judge's JSON verdict is not cut; the answer in it is


def test_fusion_response_has_fusion_object_and_total_cost(client):
    r = client.chat.completions.create(model="polyfuse/trio", messages=ask())
    assert r.choices[0].message.content == FUSED
    fusion = r.model_extra["fusion"]
    cands = {c["member"]: c for c in fusion["candidates"]}
    assert cands["up/a"]["status"] == "ok" and cands["up/a"]["text"] == A
    assert cands["up/a"]["usage"]["completion_tokens"] == len(A.split())
    assert cands["up/a"]["cost"] == pytest.approx(0.001) and cands["up/a"]["latency"] > 0
    assert cands["up/down"]["status"] == "failed" and "HTTP 500" in cands["up/down"]["error"]
    assert [f["member"] for f in fusion["failed_models"]] == ["up/down"]
    assert fusion["mode"] == "merge" and fusion["verdict"]["judge"] == "up/judge-merge"
    assert 0 <= fusion["agreement"] <= 1 and fusion["overhead"] >= 0
    assert fusion["judge_calls"][0]["cost"] == pytest.approx(0.0005)
    assert r.usage.model_extra["cost"] == pytest.approx(0.001 + 0.002 + 0.0005)


def test_fusion_streams_judge_answer_token_by_token_and_sdk_skips_progress(client, server):
    chunks = list(client.chat.completions.create(model="polyfuse/trio", messages=ask(), stream=True))
    assert all(type(c).__name__ == "ChatCompletionChunk" and c.choices for c in chunks)  # nothing stray
    texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(texts) == FUSED and len(texts) > 3
    last = chunks[-1]
    assert last.usage.model_extra["cost"] == pytest.approx(0.0035)
    assert last.model_extra["fusion"]["failed_models"][0]["member"] == "up/down"
    # The same stream on the wire carries the progress events the SDK skipped.
    raw = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "polyfuse/trio", "messages": ask(), "stream": True},
        headers={"Authorization": f"Bearer {SERVER_KEY}"},
        timeout=30,
    ).text
    assert ': polyfuse {"type":"member_started"' in raw
    assert '"type":"member_failed"' in raw and '"type":"verdict"' in raw
    assert raw.rstrip().endswith("data: [DONE]")


def test_best_of_streams_the_chosen_candidate(client):
    chunks = list(client.chat.completions.create(model="polyfuse/pick", messages=ask(), stream=True))
    texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(texts) in (A, B) and len(texts) > 1
    assert chunks[-1].model_extra["fusion"]["verdict"]["choice"] in ("up/a", "up/b")


def test_fusion_overrides_pool_mode_and_limits(client):
    r = client.chat.completions.create(
        model="polyfuse/trio",
        messages=ask(),
        extra_body={"fusion": {"pool": ["up/a", "up/a"], "mode": "vote", "min_responses": 1}},
    )
    fusion = r.model_extra["fusion"]
    assert fusion["mode"] == "vote" and [c["member"] for c in fusion["candidates"]] == ["up/a#1", "up/a#2"]
    assert r.choices[0].message.content == A


def test_models_fallback_array(client):
    r = client.chat.completions.create(model="up/down", messages=ask(), extra_body={"models": ["up/b"]})
    assert r.model == "up/b" and r.choices[0].message.content == B
    chunks = list(
        client.chat.completions.create(
            model="up/down", messages=ask(), stream=True, extra_body={"models": ["up/down", "up/a"]}
        )
    )
    assert {c.model for c in chunks} == {"up/a"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == A


def test_sdk_raises_the_right_exception_types(client, server):
    bad_key = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="up/a", messages=ask())
    with pytest.raises(openai.NotFoundError, match="nope"):
        client.chat.completions.create(
            model="up/nope-but-valid-prefix", messages=ask(), extra_body={"models": ["nope"]}
        )
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="up/a", messages=ask(), temperature="hot")  # type: ignore[arg-type]
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.APIStatusError) as budget:
        client.chat.completions.create(
            model="polyfuse/trio", messages=ask(), extra_body={"fusion": {"pool": ["up/a"], "max_cost": 1e-9}}
        )
    assert budget.value.status_code == 402 and "estimated cost $" in budget.value.message
    assert budget.value.body["metadata"]["estimate"] > 1e-9


def test_error_after_the_stream_began_is_an_sse_error_event(client, server):
    stream = client.chat.completions.create(model="up/midstream", messages=ask(), stream=True)
    got = []
    with pytest.raises(openai.APIError, match="provider disconnected"):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "partial answer then trouble"[: len("".join(got))] and "".join(got)
    raw = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "up/midstream", "messages": ask(), "stream": True},
        headers={"Authorization": f"Bearer {SERVER_KEY}"},
    ).text
    assert '"finish_reason":"error"' in raw and raw.rstrip().endswith("data: [DONE]")


def _wait(predicate, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize(
    ("model", "calls"), [("polyfuse/slow", 2), ("up/slow1", 1)], ids=["fusion", "pass-through"]
)
def test_client_disconnect_cancels_every_upstream_call(server, upstream, model, calls):
    before = upstream.disconnects
    body = json.dumps({"model": model, "messages": ask(), "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {SERVER_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert _wait(lambda: upstream.active == calls), upstream.active
    # the client is gone: every upstream call must end long before the 30 s the members would take
    assert _wait(lambda: upstream.active == 0), upstream.active
    assert upstream.disconnects - before == calls


def test_recursion_guard_stops_a_loop_through_polyfuse(upstream, tmp_path):
    # A model id can point back at polyfuse itself (here: the server's own URL, without auth, which the
    # operator has to allow: raw URLs are refused by default).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    open_config = config_text(upstream).replace(
        f'api_keys = ["{SERVER_KEY}"]', f'allow_model_urls = ["http://127.0.0.1:{port}/v1"]'
    )
    with ServeProcess(tmp_path, open_config, args=["--port", str(port)]) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        me = srv.url + "/v1#"
        ok = client.chat.completions.create(model=me + me + "up/a", messages=ask())  # 2 hops, then up/a
        assert ok.choices[0].message.content == A
        with pytest.raises(openai.BadRequestError, match="recursion guard"):
            client.chat.completions.create(model=me + me + me + "up/a", messages=ask())


def test_provider_keys_never_leave_the_server(client, server, upstream):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="up/leak", messages=ask())
    assert PROVIDER_KEY not in str(info.value.body) and "[redacted]" in info.value.message
    r = client.chat.completions.create(
        model="polyfuse/trio", messages=ask(), extra_body={"fusion": {"pool": ["up/a", "up/leak"]}}
    )
    assert PROVIDER_KEY not in r.model_dump_json()
    with pytest.raises(openai.APIStatusError):  # every member fails: logged server-side as a 502
        client.chat.completions.create(
            model="polyfuse/trio", messages=ask(), extra_body={"fusion": {"pool": ["up/leak"]}}
        )
    auth = {"Authorization": f"Bearer {SERVER_KEY}"}
    for path in ("/", "/static/panel.js", "/openapi.json", "/v1/models", "/v1/fusion/config", "/health"):
        page = httpx.get(server.url + path, headers=auth)
        assert page.status_code == 200 and PROVIDER_KEY not in page.text, path
    assert "all 1 pool members failed" in server.logs()
    assert PROVIDER_KEY not in server.logs()
    assert any(h.get("authorization") == f"Bearer {PROVIDER_KEY}" for h in upstream.headers)  # it was used
