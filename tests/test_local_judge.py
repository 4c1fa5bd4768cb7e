"""The probability-scoring judge and members' confidence on the two bundled models (real llama.cpp logits):
structure and sanity (probabilities that are probabilities, an obvious answer more likely than nonsense), not
model brilliance."""

from __future__ import annotations

import math

import pytest

from polyfuse import FusionRequest, fuse, load_config
from polyfuse.providers.registry import ProviderHub
from polyfuse.types import GenerationParams, Message

pytestmark = pytest.mark.local

MODELS = ["local/smollm2-135m", "local/gemma3-270m"]
QUESTION = [Message(role="user", content="What is the capital of France?")]


@pytest.fixture
async def hub():
    async with ProviderHub.from_config(load_config(data={})) as h:
        yield h


@pytest.mark.parametrize("model_id", MODELS)
async def test_option_and_reply_logprobs_from_llama_cpp(hub, model_id):
    model = hub.model(model_id)
    assert model.supports_logprobs is True
    labels = await model.option_logprobs(
        [Message(role="user", content="Which is a colour? A) red B) seven. Reply A or B.")],
        {"A": ["A", " A"], "B": ["B", " B"]},
        GenerationParams(),
    )
    assert all(math.isfinite(v) and v < 0 for v in labels.logprobs.values())
    assert 0 < labels.mass <= 1 and sum(labels.normalized().values()) == pytest.approx(1.0)
    assert labels.usage.prompt_tokens > 5 and labels.usage.completion_tokens == 0
    right = await model.continuation_logprobs(QUESTION, "Paris", 64)
    nonsense = await model.continuation_logprobs(QUESTION, "Cucumber zebra seventeen", 64)
    assert right.logprobs and all(v <= 0 for v in right.logprobs)
    assert right.mean > nonsense.mean  # the obvious answer is more likely than nonsense
    again = await model.continuation_logprobs(QUESTION, "Paris", 64)  # prefix cache reused: same numbers
    assert again.logprobs == pytest.approx(right.logprobs, abs=1e-3)


@pytest.mark.parametrize("model_id", MODELS)
async def test_members_carry_their_mean_token_logprob(hub, model_id):
    model = hub.model(model_id)
    asked = await model.complete(QUESTION, GenerationParams(max_tokens=12, logprobs=True))
    plain = await model.complete(QUESTION, GenerationParams(max_tokens=12))
    assert asked.text == plain.text  # reading the logits does not change what is generated
    assert plain.logprob is None and asked.logprob is not None and -20 < asked.logprob <= 0


@pytest.mark.parametrize("method", ["label+yesno", "likelihood"])
async def test_local_fusion_with_a_probability_judge(hub, method):
    request = FusionRequest.from_prompt(
        "What is the capital of France?",
        ",".join(MODELS),
        judge="local/gemma3-270m",
        judge_method=method,
        member_timeout=900,  # the machine may be shared: local generation can crawl, it must not be cut
    )
    request.params.max_tokens = 24
    result = await fuse(request, hub)
    v = result.verdict
    ok = [c for c in result.candidates if c.ok]
    assert all(c.logprob is not None for c in ok)
    if len(ok) < 2:
        pytest.fail(f"a bundled model gave no answer: {result.failed_models}")
    assert v.method == method and v.method_note is None and not v.judge_failed
    assert v.choice in {c.member for c in ok} and 0 < v.confidence <= 1
    assert max(v.scores, key=lambda s: s.score).member == v.choice  # the choice follows the scores
    passes = {"label+yesno": 2 * len(ok), "likelihood": len(ok)}[method]
    assert len(result.judge_calls) == passes and all(
        c.usage.completion_tokens == 0 for c in result.judge_calls
    )
