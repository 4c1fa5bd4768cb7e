"""Every bad request is a 4xx with {"error": {"message", "type", "code"}}, never a 500 or a crash; plus the
OpenAPI document checked against real responses, and the panel's config endpoint."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from conftest import write_json
from polyfuse.config import load_config
from polyfuse.server.app import create_app
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import ServerThread

KEY = "test-server-key"
MSGS = [{"role": "user", "content": "Capital of France?"}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Paris"}'}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(
        {
            "a": Behaviour(text="Paris.", cost=0.001),
            "judge": Behaviour(text=write_json("Paris, fused.")),
            "tools": Behaviour(text="", tool_calls=[CALL]),
        }
    ) as up:
        yield up


@pytest.fixture(scope="module")
def server(upstream):
    config = load_config(
        data={
            "server": {"api_keys": [KEY], "max_body_bytes": 4096, "max_pool_members": 3},
            "providers": {"up": {"base_url": upstream.base_url, "max_retries": 0}},
            "presets": {"duo": {"pool": ["up/a", "up/a"], "judge": "up/judge", "mode": "merge"}},
            "prices": {"up/a": {"input": 1, "output": 1}, "up/judge": {"input": 1, "output": 1}},
        }
    )
    with ServerThread(create_app(config, env={})) as srv:
        yield srv


@pytest.fixture
def http(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


def post(http: httpx.Client, body: object, **kw: object) -> httpx.Response:
    return http.post(
        "/v1/chat/completions", content=body if isinstance(body, bytes) else json.dumps(body), **kw
    )


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
    assert "code" in err
    if code is not None:
        assert err["code"] == code, err
    return err


BAD_BODIES = {
    "malformed json": (b'{"model": "up/a", "messages": [', 400, "invalid_json"),
    "not an object": (b"[1, 2]", 400, "invalid_type"),
    "empty body": (b"", 400, "invalid_json"),
    "model wrong type": ({"model": 5, "messages": MSGS}, 400, "invalid_type"),
    "model missing": ({"messages": MSGS}, 400, "missing_required_parameter"),
    "messages wrong type": ({"model": "up/a", "messages": "hi"}, 400, "invalid_type"),
    "messages empty": ({"model": "up/a", "messages": []}, 400, "invalid_value"),
    "bad role": ({"model": "up/a", "messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_value"),
    "temperature wrong type": (
        {"model": "up/a", "messages": MSGS, "temperature": "hot"},
        400,
        "invalid_type",
    ),
    "temperature out of range": ({"model": "up/a", "messages": MSGS, "temperature": 9}, 400, "invalid_value"),
    "max_tokens zero": ({"model": "up/a", "messages": MSGS, "max_tokens": 0}, 400, "invalid_value"),
    "stream wrong type": ({"model": "up/a", "messages": MSGS, "stream": "yes please"}, 400, "invalid_type"),
    "n above 1": ({"model": "up/a", "messages": MSGS, "n": 3}, 400, "invalid_value"),
    "image part": (
        {"model": "up/a", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "unsupported_content",
    ),
    "empty prompt to fuse": (
        {"model": "polyfuse/duo", "messages": [{"role": "user", "content": "  "}]},
        400,
        None,
    ),
    "unknown model": ({"model": "up2/a", "messages": MSGS}, 404, "model_not_found"),
    "model without prefix": ({"model": "gpt-4o", "messages": MSGS}, 404, "model_not_found"),
    "unknown fallback model": (
        {"model": "up/a", "models": ["nowhere/x"], "messages": MSGS},
        404,
        "model_not_found",
    ),
    "unknown preset": ({"model": "polyfuse/nope", "messages": MSGS}, 400, "invalid_value"),
    "fusion on a single model": ({"model": "up/a", "messages": MSGS, "fusion": {"mode": "vote"}}, 400, None),
    "preset in models": ({"model": "up/a", "models": ["polyfuse/duo"], "messages": MSGS}, 400, None),
    "unknown fusion key": (
        {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"pol": ["up/a"]}},
        400,
        None,
    ),
    "unknown mode": ({"model": "polyfuse/duo", "messages": MSGS, "fusion": {"mode": "shout"}}, 400, None),
    "rounds zero": ({"model": "polyfuse/duo", "messages": MSGS, "fusion": {"rounds": 0}}, 400, None),
    "too many members": (
        {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"pool": "up/a*4"}},
        400,
        "too_many_members",
    ),
    "min_responses above pool": (
        {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"min_responses": 5}},
        400,
        None,
    ),
    "unknown pool member": (
        {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"pool": ["zzz/a"]}},
        404,
        "model_not_found",
    ),
    "bad member option": (
        {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"pool": ["up/a?colour=red"]}},
        400,
        None,
    ),
    "over budget": (
        {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"max_cost": 0.000001}},
        402,
        "budget_exceeded",
    ),
    "json_schema without schema": (
        {"model": "up/a", "messages": MSGS, "response_format": {"type": "json_schema", "json_schema": {}}},
        400,
        None,
    ),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_request_is_a_4xx_in_openai_form(http, case, stream):
    body, status, code = BAD_BODIES[case]
    if stream and isinstance(body, dict):
        body = {**body, "stream": body.get("stream", True)}
    assert_error(post(http, body), status, code)


def test_budget_error_names_the_estimate(http):
    err = assert_error(post(http, BAD_BODIES["over budget"][0]), 402, "budget_exceeded")
    assert "estimated cost $" in err["message"] and err["metadata"]["estimate"] > 0.000001


def test_oversized_body_is_413(http):
    big = {"model": "up/a", "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(post(http, big), 413, "request_too_large")

    def chunks():  # no content-length: the limit holds for a chunked body too
        yield b'{"model": "up/a", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    assert_error(http.post("/v1/chat/completions", content=chunks()), 413, "request_too_large")


def test_auth_is_required_on_v1_routes(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(
            server.url + "/v1/chat/completions", json={"model": "up/a", "messages": MSGS}, headers=headers
        )
        assert_error(r, 401, "invalid_api_key")
        assert_error(httpx.get(server.url + "/v1/models", headers=headers), 401, "invalid_api_key")
    assert httpx.get(server.url + "/health").status_code == 200  # open: liveness, the page, the API document
    assert httpx.get(server.url + "/").status_code == 200


def test_recursion_header_is_checked(http):
    assert_error(
        post(http, {"model": "up/a", "messages": MSGS}, headers={"x-polyfuse-depth": "3"}),
        400,
        "recursion_limit",
    )
    assert_error(post(http, {"model": "up/a", "messages": MSGS}, headers={"x-polyfuse-depth": "lots"}), 400)
    ok = post(http, {"model": "up/a", "messages": MSGS}, headers={"x-polyfuse-depth": "2"})
    assert ok.status_code == 200


def test_depth_is_forwarded_upstream(http, upstream):
    post(
        http,
        {"model": "up/a", "messages": [{"role": "user", "content": "depth?"}]},
        headers={"x-polyfuse-depth": "1"},
    )
    assert upstream.headers[-1]["x-polyfuse-depth"] == "2"


def test_unknown_route_and_wrong_method(http):
    assert_error(http.get("/v2/nothing"), 404, "not_found")
    assert_error(http.get("/v1/chat/completions"), 405, "method_not_allowed")
    assert_error(http.delete("/v1/models"), 405, "method_not_allowed")


def test_panel_config_comes_from_the_config(http):
    cfg = http.get("/v1/fusion/config").json()
    assert cfg["presets"]["duo"]["pool"] == ["up/a#1", "up/a#2"] and cfg["presets"]["duo"]["mode"] == "merge"
    assert "up/a" in cfg["models"] and "up/judge" in cfg["models"] and "local/smollm2-135m" in cfg["models"]
    assert set(cfg["modes"]) == {"best-of", "merge", "debate", "vote"} and cfg["max_pool_members"] == 3
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert "polyfuse/duo" in ids and "polyfuse/local" in ids and "up/a" in ids


# -- the OpenAPI document matches what the routes accept and return ------------------------------------------------
@pytest.fixture(scope="module")
def openapi(server):
    return httpx.get(server.url + "/openapi.json").json()


def validator(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**doc, "$ref": f"#/components/schemas/{name}"})


def test_openapi_schemas_validate_real_responses(http, openapi):
    assert openapi["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    fused = post(http, {"model": "polyfuse/duo", "messages": MSGS}).json()
    single = post(http, {"model": "up/a", "messages": MSGS}).json()
    for body in (fused, single):
        validator(openapi, "ChatCompletion").validate(body)
    assert fused["fusion"]["candidates"]
    validator(openapi, "ModelList").validate(http.get("/v1/models").json())
    validator(openapi, "PanelConfig").validate(http.get("/v1/fusion/config").json())
    validator(openapi, "Health").validate(http.get("/health").json())
    for case in ("malformed json", "unknown model", "over budget"):
        validator(openapi, "ErrorResponse").validate(post(http, BAD_BODIES[case][0]).json())
    raw = post(http, {"model": "polyfuse/duo", "messages": MSGS, "stream": True}).text
    chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    progress = [json.loads(line[11:]) for line in raw.splitlines() if line.startswith(": polyfuse ")]
    assert chunks and progress
    for chunk in chunks:
        validator(openapi, "ChatCompletionChunk").validate(chunk)
    for event in progress:
        validator(openapi, "ProgressEvent").validate(event)


def test_openapi_request_schema_agrees_with_the_server(http, openapi):
    schema = validator(openapi, "ChatCompletionRequest")
    good = {"model": "up/a", "messages": MSGS, "temperature": 0.5, "stop": "\n", "fusion": None}
    schema.validate(good)
    assert post(http, good).status_code == 200
    for case in (
        "temperature out of range",
        "n above 1",
        "messages empty",
        "unknown fusion key",
        "model wrong type",
    ):
        body = BAD_BODIES[case][0]
        assert not schema.is_valid(body), case
        assert post(http, body).status_code == 400


# -- tools through the ensemble, and the one place a finished fusion passes --------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tool_calls_pass_to_members_and_come_back_in_openai_form(http, upstream, stream):
    body = {
        "model": "polyfuse/duo",
        "messages": [{"role": "user", "content": f"Look up Paris ({stream})"}],
        "tools": TOOLS,
        "tool_choice": "auto",
        "stream": stream,
        "fusion": {"pool": ["up/tools", "up/tools"], "mode": "vote"},
    }
    r = post(http, body)
    assert r.status_code == 200, r.text
    sent = [b for b in upstream.requests if b["messages"][-1]["content"] == f"Look up Paris ({stream})"]
    assert len(sent) == 2 and all(b["tools"] == TOOLS and b["tool_choice"] == "auto" for b in sent)
    if not stream:
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["tool_calls"] == [CALL]
        assert choice["message"]["content"] is None
        return
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks)  # no "[tool call] ..." text
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "tool_calls" and last["delta"]["tool_calls"] == [{"index": 0, **CALL}]


def test_every_finished_fusion_reaches_the_result_hook(upstream):
    seen = []
    config = load_config(
        data={
            "providers": {"up": {"base_url": upstream.base_url, "max_retries": 0}},
            "presets": {"duo": {"pool": ["up/a", "up/a"], "judge": "up/judge", "mode": "merge"}},
        }
    )
    with ServerThread(create_app(config, env={}, result_hooks=[lambda req, res: seen.append(res)])) as srv:
        for stream in (False, True):
            r = httpx.post(
                srv.url + "/v1/chat/completions",
                json={"model": "polyfuse/duo", "messages": MSGS, "stream": stream},
            )
            assert r.status_code == 200
        httpx.post(srv.url + "/v1/chat/completions", json={"model": "up/a", "messages": MSGS})  # not a fusion
    assert [res.answer for res in seen] == ["Paris, fused.", "Paris, fused."]
    assert all(res.mode == "merge" and len(res.candidates) == 2 for res in seen)
