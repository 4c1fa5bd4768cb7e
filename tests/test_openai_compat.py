"""The OpenAI-compatible provider against a real HTTP server on loopback with scripted behaviour."""

import time

import pytest

from polyfuse import FusionRequest, fuse
from polyfuse.config import Config
from polyfuse.errors import (
    AuthenticationError,
    BadUpstreamRequestError,
    MissingKeyError,
    RateLimitedError,
    UnknownModelError,
    UpstreamError,
)
from polyfuse.providers.registry import ProviderHub
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from polyfuse.types import GenerationParams, Message

MSGS = [Message(role="user", content="Say hello")]


@pytest.fixture
def upstream():
    with FakeUpstream(
        {
            "ok": Behaviour(text="Hello there, friend.", cost=0.0042, answered_by="vendor/actual-model"),
            "keepalive": Behaviour(text="still here", keepalive=True),
            "flaky": Behaviour(text="recovered", statuses=[503, 429], retry_after="0"),
            "limited": Behaviour(
                statuses=[429, 429, 429, 429],
                retry_after="0",
                error_body={
                    "error": {"code": 429, "message": "Rate limit exceeded", "metadata": {"provider": "x"}}
                },
            ),
            "auth": Behaviour(
                statuses=[401], error_body={"error": {"code": 401, "message": "No auth credentials"}}
            ),
            "bad": Behaviour(statuses=[400]),
            "midstream": Behaviour(text="partial answer here", midstream_error=True),
            "slow": Behaviour(latency=1.0),
            "tools": Behaviour(
                tool_calls=[
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "paris"}'},
                    }
                ]
            ),
        }
    ) as up:
        yield up


def hub_for(up: FakeUpstream, **provider) -> ProviderHub:
    cfg = Config.model_validate(
        {"providers": {"fake": {"base_url": up.base_url, "api_key": "sk-test", **provider}}}
    )
    return ProviderHub.from_config(cfg, env={})


async def test_complete_reads_text_usage_cost_and_real_model(upstream):
    async with hub_for(upstream) as hub:
        c = await hub.model("fake/ok").complete(
            MSGS, GenerationParams(temperature=0.3, max_tokens=20, seed=4)
        )
    assert c.text == "Hello there, friend."
    assert c.cost == 0.0042 and c.model == "vendor/actual-model"
    assert c.usage.prompt_tokens == 2 and c.usage.completion_tokens == 3
    body = upstream.requests[0]
    assert (
        body["model"] == "ok"
        and body["temperature"] == 0.3
        and body["max_tokens"] == 20
        and body["seed"] == 4
    )
    assert upstream.headers[0]["authorization"] == "Bearer sk-test"


async def test_stream_yields_deltas_usage_and_ttft(upstream):
    async with hub_for(upstream) as hub:
        events = [e async for e in hub.model("fake/ok").stream(MSGS, GenerationParams())]
    deltas, final = events[:-1], events[-1]
    assert len(deltas) == 4 and "".join(d.text for d in deltas) == final.text == "Hello there, friend."
    assert final.cost == 0.0042 and final.usage.completion_tokens == 3 and final.ttft is not None
    assert upstream.requests[0]["stream_options"] == {"include_usage": True}


async def test_keepalive_comments_are_skipped(upstream):
    async with hub_for(upstream) as hub:
        c = await _stream_final(hub, "fake/keepalive")
    assert c.text == "still here"


async def test_retries_5xx_and_429_honouring_retry_after(upstream):
    async with hub_for(upstream) as hub:
        c = await hub.model("fake/flaky").complete(MSGS, GenerationParams())
        s = await _stream_final(hub, "fake/flaky")
    assert c.text == "recovered" and s.text == "recovered"
    assert len([r for r in upstream.requests if r["model"] == "flaky"]) == 4


async def test_retry_after_is_waited_for(upstream):
    upstream.behaviours["wait"] = Behaviour(text="ok", statuses=[429], retry_after="0.4")
    async with hub_for(upstream) as hub:
        start = time.perf_counter()
        await hub.model("fake/wait").complete(MSGS, GenerationParams())
    assert time.perf_counter() - start >= 0.4


async def test_errors_are_typed_with_the_upstream_message(upstream):
    async with hub_for(upstream, max_retries=1) as hub:
        with pytest.raises(RateLimitedError, match="Rate limit exceeded") as info:
            await hub.model("fake/limited").complete(MSGS, GenerationParams())
        assert info.value.status == 429 and info.value.retry_after == 0
        with pytest.raises(AuthenticationError, match="No auth credentials"):
            await _stream_final(hub, "fake/auth")
        with pytest.raises(BadUpstreamRequestError, match="scripted status 400"):
            await hub.model("fake/bad").complete(MSGS, GenerationParams())
    assert len([r for r in upstream.requests if r["model"] == "limited"]) == 2  # one retry, then give up
    assert len([r for r in upstream.requests if r["model"] == "auth"]) == 1  # never retried


async def test_midstream_error_event_raises_and_is_not_retried(upstream):
    async with hub_for(upstream) as hub:
        with pytest.raises(UpstreamError, match="provider disconnected"):
            await _stream_final(hub, "fake/midstream")
    assert len([r for r in upstream.requests if r["model"] == "midstream"]) == 1


async def test_read_timeout_is_a_typed_timeout(upstream):
    from polyfuse.errors import ProviderTimeoutError

    async with hub_for(upstream, read_timeout=0.2, max_retries=0) as hub:
        with pytest.raises(ProviderTimeoutError):
            await hub.model("fake/slow").complete(MSGS, GenerationParams())


async def test_connection_refused_is_an_upstream_error():
    cfg = Config.model_validate(
        {"providers": {"dead": {"base_url": "http://127.0.0.1:9/v1", "max_retries": 0}}}
    )
    async with ProviderHub.from_config(cfg, env={}) as hub:
        with pytest.raises(UpstreamError, match="Cannot connect to host 127.0.0.1:9"):
            await hub.model("dead/x").complete(MSGS, GenerationParams())


async def test_streamed_tool_calls_are_joined_in_openai_form(upstream):
    async with hub_for(upstream) as hub:
        c = await _stream_final(hub, "fake/tools")
    assert c.tool_calls == [
        {"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "paris"}'}}
    ]


async def test_structured_output_steps_down_for_the_request_when_the_backend_refuses(upstream):
    # an error naming no parameter (llama_cpp.server answers a 500 with the reason in prose only): this request
    # is retried with the next form at once, and nothing is remembered (the next call tries json_schema again)
    upstream.behaviours["picky"] = Behaviour(text='{"a": 1}', statuses=[400])
    schema = {"type": "object"}
    async with hub_for(upstream) as hub:
        model = hub.model("fake/picky")
        c = await model.complete(MSGS, GenerationParams(json_schema=schema))
        again = await model.complete(MSGS, GenerationParams(json_schema=schema))
        assert model.structured == "json_schema"
    assert c.text == again.text == '{"a": 1}'
    formats = [r.get("response_format") for r in upstream.requests if r["model"] == "picky"]
    assert formats[0]["type"] == "json_schema" and formats[0]["json_schema"]["schema"] == schema
    assert formats[1] == {"type": "json_object", "schema": schema}
    assert formats[2]["type"] == "json_schema" and len(formats) == 3


async def test_structured_output_refused_as_unsupported_is_remembered_for_that_model_only(upstream, caplog):
    unsupported = {"error": {"message": "no", "param": "response_format", "code": "unsupported_parameter"}}
    upstream.behaviours["strict"] = Behaviour(text="{}", statuses=[400], error_body=unsupported)
    upstream.behaviours["other"] = Behaviour(text="{}")
    schema = {"type": "object"}
    async with hub_for(upstream) as hub:
        with caplog.at_level("INFO", logger="polyfuse.providers"):
            await hub.model("fake/strict").complete(MSGS, GenerationParams(json_schema=schema))
        await hub.model("fake/strict").complete(MSGS, GenerationParams(json_schema=schema))
        await hub.model("fake/other").complete(MSGS, GenerationParams(json_schema=schema))
        assert hub.model("fake/strict").structured == "json_object_schema"
        assert hub.model("fake/other").structured == "json_schema"  # same upstream, its own capabilities
    strict = [r["response_format"]["type"] for r in upstream.requests if r["model"] == "strict"]
    assert strict == ["json_schema", "json_object", "json_object"]
    other = [r["response_format"]["type"] for r in upstream.requests if r["model"] == "other"]
    assert other == ["json_schema"]
    assert "fake/strict: the upstream refused response_format json_schema" in caplog.text
    assert "remembered for this model" in caplog.text


async def test_base_url_model_ids_and_one_client_per_upstream(upstream):
    async with ProviderHub.from_config(Config(), env={}) as hub:
        a = hub.model(f"{upstream.base_url}#ok")
        b = hub.model(f"{upstream.base_url}#keepalive")
        assert a.upstream is b.upstream
        assert (await a.complete(MSGS, GenerationParams())).text == "Hello there, friend."
        with pytest.raises(UnknownModelError, match="needs a model name after '#'"):
            hub.model(upstream.base_url)
    assert a.upstream._session is None  # closed on shutdown


def test_missing_key_names_the_environment_variable():
    hub = ProviderHub.from_config(Config(), env={})
    with pytest.raises(MissingKeyError, match="OPENROUTER_API_KEY"):
        hub.model("openrouter/openai/gpt-4o")
    assert hub.missing_keys()["openai"] == "OPENAI_API_KEY"
    hub2 = ProviderHub.from_config(Config(), env={"OPENROUTER_API_KEY": "sk-or"})
    model = hub2.model("openrouter/anthropic/claude-sonnet-4.5")
    assert model.remote_name == "anthropic/claude-sonnet-4.5"
    assert model.upstream.base_url == "https://openrouter.ai/api/v1"
    assert model.upstream.extra_body == {"usage": {"include": True}}


async def test_fusion_over_http_in_every_mode(upstream):
    import json

    upstream.behaviours["judge"] = Behaviour(
        text=json.dumps(
            {
                "scores": {"A": {"score": 8, "reason": "ok"}, "B": {"score": 6, "reason": "ok"}},
                "consensus": [],
                "contradictions": [],
                "agreement": 0.7,
                "choice": "A",
                "answer": "Merged hello.",
            }
        )
    )
    for mode in ("best-of", "merge", "debate", "vote"):
        request = FusionRequest.from_prompt(
            "Say hello", "fake/ok,fake/keepalive", judge="fake/judge", mode=mode, rounds=1
        )
        async with hub_for(upstream) as hub:
            result = await fuse(request, hub)
        assert result.answer and all(c.ok for c in result.candidates), mode
        if mode in ("merge", "debate"):
            assert result.answer == "Merged hello."
        if mode == "best-of":
            assert result.answer in ("Hello there, friend.", "still here")
        judge_bodies = [r for r in upstream.requests if r["model"] == "judge"]
        if mode != "vote":
            assert judge_bodies[-1]["response_format"]["type"] == "json_schema"
            assert judge_bodies[-1]["temperature"] == 0.0


async def _stream_final(hub, model_id):
    final = None
    async for event in hub.model(model_id).stream(MSGS, GenerationParams()):
        final = event
    return final


async def test_a_parameter_the_backend_says_is_unsupported_is_dropped_and_remembered(upstream, caplog):
    upstream.behaviours["reasoner"] = Behaviour(
        text="fine",
        statuses=[400],
        error_body={
            "error": {
                "message": "Unsupported value: 'temperature' does not support 0.0 with this model.",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "unsupported_value",
            }
        },
    )
    async with hub_for(upstream) as hub:
        model = hub.model("fake/reasoner")
        with caplog.at_level("INFO", logger="polyfuse.providers"):
            first = await model.complete(MSGS, GenerationParams(temperature=0.0, seed=3))
        second = await _stream_final(hub, "fake/reasoner")
    assert first.text == second.text == "fine"
    bodies = [r for r in upstream.requests if r["model"] == "reasoner"]
    assert bodies[0]["temperature"] == 0.0 and "temperature" not in bodies[1] and bodies[1]["seed"] == 3
    assert model.dropped == {"temperature"}
    assert "fake/reasoner: the upstream refused temperature (HTTP 400, code unsupported_value)" in caplog.text


async def test_a_named_parameter_without_unsupported_is_dropped_for_that_request_only(upstream):
    upstream.behaviours["fussy"] = Behaviour(
        text="ok",
        statuses=[400],
        error_body={"error": {"message": "bad stop", "param": "stop", "code": None}},
    )
    async with hub_for(upstream) as hub:
        model = hub.model("fake/fussy")
        await model.complete(MSGS, GenerationParams(stop=["\n"]))
        await model.complete(MSGS, GenerationParams(stop=["\n"]))
        assert model.dropped == frozenset()
    assert ["stop" in r for r in upstream.requests if r["model"] == "fussy"] == [True, False, True]


async def test_free_text_never_changes_what_is_sent(upstream):
    # before: one context-length 400 whose message contained "stop" made the provider drop response_format
    # and stop for every later request of every model on that upstream, without a log line
    upstream.behaviours["long"] = Behaviour(
        statuses=[400],
        error_body={
            "error": {
                "message": "This model's maximum context length is 8192 tokens; please stop and shorten it",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    upstream.behaviours["after"] = Behaviour(text="{}")
    schema = {"type": "object"}
    params = GenerationParams(json_schema=schema, stop=["END"], temperature=0.1)
    async with hub_for(upstream) as hub:
        with pytest.raises(BadUpstreamRequestError, match="maximum context length") as info:
            await hub.model("fake/long").complete(MSGS, params)
        assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
        await hub.model("fake/after").complete(MSGS, params)
        assert (
            hub.model("fake/long").dropped == frozenset()
            and hub.model("fake/long").structured == "json_schema"
        )
    assert len([r for r in upstream.requests if r["model"] == "long"]) == 1  # no step-down retries either
    after = next(r for r in upstream.requests if r["model"] == "after")
    assert after["stop"] == ["END"] and after["response_format"]["type"] == "json_schema"


async def test_raw_prompts_go_to_the_completions_endpoint(upstream):
    upstream.behaviours["coder"] = Behaviour(text="return a + b")
    async with hub_for(upstream) as hub:
        model = hub.model("fake/coder")
        assert model.supports_text_completion  # a self-hosted provider of one's own
        events = [
            e
            async for e in model.stream_text(
                "<|fim_prefix|>def f(a, b):\n    ", GenerationParams(stop=["<|"])
            )
        ]
    assert "".join(e.text for e in events[:-1]) == events[-1].text == "return a + b"
    body = upstream.requests[-1]
    assert body["_path"] == "/v1/completions" and body["prompt"].startswith("<|fim_prefix|>")
    assert "messages" not in body and body["stop"] == ["<|"]
    hosted = ProviderHub.from_config(Config(), env={"OPENAI_API_KEY": "k", "OPENROUTER_API_KEY": "k"})
    assert not hosted.model("openai/gpt-4o").supports_text_completion
    assert hosted.model("openrouter/qwen/qwen-2.5-coder-32b-instruct").supports_text_completion
