"""Real local inference on both bundled models (llama-cpp-python in-process). Assertions check structure and
evidence, not model brilliance."""

import asyncio

import pytest

from polyfuse import fuse, load_config
from polyfuse.errors import UnknownModelError
from polyfuse.fusion.judge import verdict_schema
from polyfuse.providers.local import bundled_path, render_base_prompt
from polyfuse.providers.registry import ProviderHub
from polyfuse.types import GenerationParams, Message

pytestmark = pytest.mark.local
QUESTION = "What is the capital of France?"


@pytest.fixture
async def hub():
    async with ProviderHub.from_config(load_config(data={})) as h:
        yield h


def test_bundled_model_files_are_found():
    for name in ("smollm2-135m", "gemma3-270m"):
        path = bundled_path(name)
        assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_base_prompt_is_a_question_answer_transcript():
    msgs = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="2+2?"),
        Message(role="assistant", content="4"),
        Message(role="user", content="Sure?"),
    ]
    assert render_base_prompt(msgs) == "Be brief.\n\nQuestion: 2+2?\nAnswer: 4\n\nQuestion: Sure?\nAnswer:"


async def test_chat_and_base_models_stream_with_usage(hub):
    for model_id, kind in (("local/smollm2-135m", "chat"), ("local/gemma3-270m", "base")):
        model = hub.model(model_id)
        events = [
            e
            async for e in model.stream(
                [Message(role="user", content=QUESTION)], GenerationParams(max_tokens=24)
            )
        ]
        final = events[-1]
        assert model.kind == kind
        assert final.text.strip(), model_id
        assert "".join(e.text for e in events[:-1]) == final.text
        assert final.usage.prompt_tokens > 5 and 0 < final.usage.completion_tokens <= 24
        assert final.cost == 0.0 and final.ttft is not None and final.latency >= final.ttft


async def test_local_judge_decodes_under_the_verdict_grammar(hub):
    import json

    schema = verdict_schema(["A", "B"], "choose")
    c = await hub.model("local/smollm2-135m").complete(
        [
            Message(
                role="user",
                content="Compare answer A 'Paris' and answer B 'Lyon' to: capital of France? JSON.",
            )
        ],
        GenerationParams(temperature=0, max_tokens=256, json_schema=schema),
    )
    data = json.loads(c.text)
    assert data["choice"] in ("A", "B") and set(data["scores"]) == {"A", "B"}
    assert data["agreement"] in [i / 10 for i in range(11)]


async def test_local_file_path_models_and_unknown_names(hub):
    path = bundled_path("smollm2-135m")
    model = hub.model(f"local:{path}")
    c = await model.complete([Message(role="user", content="Hi")], GenerationParams(max_tokens=8))
    assert model.kind == "chat" and c.text  # template read from the file
    with pytest.raises(UnknownModelError, match="bundled: gemma3-270m, smollm2-135m"):
        hub.model("local/nope")
    with pytest.raises(UnknownModelError, match="does not exist"):
        hub.model("local:/no/such/model.gguf")


async def test_generation_runs_off_the_event_loop_and_stops_when_cancelled(hub):
    model = hub.model("local/smollm2-135m")
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    gen_task = asyncio.create_task(
        model.complete(
            [Message(role="user", content="Write a long story.")], GenerationParams(max_tokens=400)
        )
    )
    while hub.local_runtime.generating == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    gen_task.cancel()
    await asyncio.gather(gen_task, return_exceptions=True)
    t.cancel()
    assert ticks > 20  # the loop kept running while the model generated
    assert hub.local_runtime.generating == 0  # the worker stopped before the cancelled call returned


@pytest.mark.parametrize("mode", ["best-of", "merge", "debate", "vote"])
async def test_fusion_end_to_end_on_both_bundled_models(hub, mode):
    cfg = load_config(data={})
    request = cfg.build_request(QUESTION, preset="local", mode=mode, rounds=1)
    events = []
    result = await fuse(request, hub, on_event=events.append)
    assert result.answer.strip()
    members = {"local/smollm2-135m", "local/gemma3-270m"}
    # debate also offers the judge a first answer that revision dropped, as "<member>@round0" (issue 11)
    assert {c.member for c in result.candidates if "@round0" not in c.member} == members
    round0 = [c for c in result.candidates if "@round0" in c.member]
    assert mode == "debate" or not round0
    assert all(c.member.removesuffix("@round0") in members and c.round == 0 for c in round0)
    assert all(c.ok and c.text and c.latency > 0 and c.usage.completion_tokens > 0 for c in result.candidates)
    assert result.cost == 0.0 and result.cost_known
    assert result.wall_time >= result.critical_path > 0
    assert 0 <= result.agreement <= 1
    if mode == "vote":
        assert result.judge_calls == [] and result.answer in [c.text for c in result.candidates]
    else:
        assert result.verdict.judge == "local/smollm2-135m" and result.judge_calls
        if not result.verdict.judge_failed and mode == "best-of":
            assert result.answer in [c.text for c in result.candidates]
    if mode == "debate":
        assert len(result.rounds) == 2
    assert events[-1].type == "done"
