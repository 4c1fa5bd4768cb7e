"""Property-based fuzzing of the server from its own /openapi.json with schemathesis: whatever a generated
request looks like (valid, or broken on purpose), the answer is never a 5xx, and every 4xx is an error in
OpenAI's form. The server fuses over a fake upstream on loopback so that valid requests really run."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from polyfuse.config import load_config
from polyfuse.server.app import create_app
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import ServerThread

EXAMPLES = {"POST": 120, "GET": 15}
# random strings are unknown models (404s); half of the valid requests name ones that exist, to run for real
KNOWN_MODELS = ["up/a", "polyfuse/fz", "polyfuse", "up/b"]


@pytest.fixture(scope="module")
def server():
    with FakeUpstream(default=Behaviour(text="fuzzed answer")) as up:
        config = load_config(
            data={
                "default_preset": "fz",
                "providers": {"up": {"base_url": up.base_url, "max_retries": 0}},
                "presets": {"fz": {"pool": ["up/a", "up/b"], "judge": "up/j", "mode": "vote"}},
                "server": {"passthrough_timeout": 5.0, "max_body_bytes": 20000},
            }
        )
        with ServerThread(create_app(config, env={})) as srv:
            yield srv


def operations(server) -> list:
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [result.ok() for result in api.get_all_operations()]


def check_openai_form(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, f"{status}: {response.text[:300]}"  # type: ignore[attr-defined]
    if status >= 400:
        err = response.json()["error"]  # type: ignore[attr-defined]
        assert isinstance(err["message"], str) and err["message"], err
        assert isinstance(err["type"], str) and "code" in err and "param" in err, err


def cases(op: object, mode: GenerationMode) -> st.SearchStrategy[schemathesis.Case]:
    strategy = op.as_strategy(generation_mode=mode)  # type: ignore[attr-defined]
    if mode != GenerationMode.POSITIVE or op.path != "/v1/chat/completions":  # type: ignore[attr-defined]
        return strategy  # type: ignore[no-any-return]

    def known(drawn: tuple[schemathesis.Case, str, bool]) -> schemathesis.Case:
        case, model, swap = drawn
        if swap and isinstance(case.body, dict):
            case.body["model"] = model
        return case

    return st.tuples(strategy, st.sampled_from(KNOWN_MODELS), st.booleans()).map(known)


def fuzz(op: object, mode: GenerationMode, base_url: str) -> list[int]:
    """Run one operation's generated cases; the statuses seen."""
    seen: list[int] = []

    @given(case=cases(op, mode))
    @settings(
        max_examples=EXAMPLES[op.method.upper()],  # type: ignore[attr-defined]
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, timeout=30)
        seen.append(response.status_code)
        check_openai_form(response)

    run()
    return seen


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "broken"])
def test_no_5xx_and_every_4xx_in_openai_form(server, mode):
    # schemathesis's pytest plugin does not load under this pytest; its strategies drive hypothesis directly
    ops = operations(server)
    assert {op.path for op in ops} >= {"/v1/chat/completions", "/v1/models", "/health"}
    for op in ops:
        if mode == GenerationMode.NEGATIVE and op.method.upper() != "POST":
            continue  # a GET without parameters has nothing to break
        seen = fuzz(op, mode, server.url)
        assert seen, op.path
        if op.path == "/v1/chat/completions" and mode == GenerationMode.POSITIVE:
            assert 200 in seen, seen  # valid requests really ran, not only errors
