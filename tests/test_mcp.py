"""``polyfuse mcp`` as a real process, driven by the MCP SDK's own client over stdio and streamable HTTP: tools
listed and called (on the bundled models, and on a loopback fake upstream where exact behaviour matters),
progress notifications, a cancelled call stopping every model call in flight, the recursion guard, bad
arguments answered as tool errors while the server keeps serving."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client

from mcpkit import ENV, MCP, HttpServer, fake_config, stdio_client, wait_until
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from reviewkit import EVAL, UNUSED, G, comments, repo

LOCAL_CONFIG = """
default_preset = "tiny"
[presets.tiny]  # both bundled models, short answers: the test checks the plumbing, not the prose
pool = ["local/smollm2-135m", "local/gemma3-270m"]
judge = "local/smollm2-135m"
max_tokens = 24
judge_max_tokens = 200
[code]
preset = "tiny"
max_tokens = 64
"""


@asynccontextmanager
async def connect(transport: str, tmp: Path, config: Path, **kw: object) -> AsyncIterator[Client]:
    if transport == "stdio":
        async with stdio_client(tmp, config, **kw) as client:  # type: ignore[arg-type]
            yield client
    else:
        with HttpServer(tmp, config, **kw) as server:  # type: ignore[arg-type]
            async with server.client() as client:
                yield client


def text(result) -> str:
    return result.content[0].text


@pytest.mark.local
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_every_tool_on_the_bundled_models(tmp_path, transport):
    root = tmp_path / "repo"
    repo(root)
    config = root / "polyfuse.toml"
    config.write_text(LOCAL_CONFIG)
    async with connect(transport, root, config) as client:
        listed = (await client.list_tools()).tools
        assert [t.name for t in listed] == ["fuse", "consult", "review_diff"]
        schemas = {t.name: t.input_schema for t in listed}
        assert schemas["fuse"]["required"] == ["prompt"] and schemas["fuse"]["additionalProperties"] is False
        assert set(schemas["review_diff"]["properties"]) >= {"diff", "base", "min_agreement"}

        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append((p, total, message))

        fused = await client.call_tool(
            "fuse", {"prompt": "What is the capital of France?"}, progress_callback=on_progress
        )
        assert not fused.is_error, text(fused)
        out = fused.structured_content
        assert (
            out["answer"].strip()
            and out["mode"] == "best-of"
            and out["verdict"]["judge"] in (None, "local/smollm2-135m")
        )
        assert {m["model"] for m in out["members"]} <= {"local/smollm2-135m", "local/gemma3-270m"}
        assert len(out["members"]) + len(out["failed_models"]) == 2 and out["cost"] == 0
        assert text(fused).startswith(out["answer"]) and "[polyfuse best-of: " in text(fused)
        values = [p for p, _, _ in progress]
        assert len(values) >= 2 and values == sorted(set(values))  # notifications as members answered
        assert any("answered in" in (m or "") for _, _, m in progress)

        consulted = await client.call_tool("consult", {"prompt": "Name a primary colour."})
        assert not consulted.is_error, text(consulted)
        advice = consulted.structured_content
        assert "answer" not in advice and advice["advisors"] and all(a["answer"] for a in advice["advisors"])
        assert set(advice["analysis"]) >= {"consensus", "contradictions", "unique_points", "agreement"}
        assert text(consulted).startswith("Advisors' answers (no final answer")

        reviewed = await client.call_tool("review_diff", {"base": "main"})
        if reviewed.is_error:  # tiny models often fail the review's checks: a tool error that says so
            assert text(reviewed).startswith("no review passed the checks")
        else:
            assert reviewed.structured_content["base"] == "main"
            for c in reviewed.structured_content["comments"] + reviewed.structured_content["disputed"]:
                assert c["file"] == "app.py" and c["raised_by"]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_cancelling_a_call_stops_every_model_call_and_the_server_keeps_serving(tmp_path, transport):
    slow = {m: Behaviour(text="slow", latency=60) for m in ("s1", "s2", "s3")}
    with FakeUpstream({**slow, "fast": Behaviour(text="fast answer")}) as up:
        # the follow-up names a model outside the preset: the config lists it, as HTTP clients need
        extra = f'[server]\nmodels = ["{up.base_url}#fast"]\n'
        config = fake_config(tmp_path, up.base_url, ["s1", "s2", "s3"], extra=extra)
        async with connect(transport, tmp_path, config) as client:
            call = asyncio.create_task(client.call_tool("fuse", {"prompt": "take your time"}))
            await asyncio.to_thread(wait_until, lambda: up.active == 3, 20, "three calls in flight")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await asyncio.to_thread(wait_until, lambda: up.active == 0, 10, "the model calls to stop")
            assert up.disconnects == 3  # each member's HTTP call was closed, not left to run out
            again = await client.call_tool("fuse", {"prompt": "quick", "pool": [f"{up.base_url}#fast"]})
            assert not again.is_error and again.structured_content["answer"] == "fast answer"
        assert {h.get("x-polyfuse-depth") for h in up.headers} == {"1"}  # model calls carry the next depth


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_bad_arguments_are_tool_errors_and_the_server_keeps_serving(tmp_path, transport):
    with FakeUpstream({"a": Behaviour(text="Paris")}) as up:
        config = fake_config(tmp_path, up.base_url, ["a"])
        async with connect(transport, tmp_path, config) as client:
            cases = [
                ("fuse", {"prompt": 5}, "fuse: argument 'prompt': Input should be a valid string (got int)"),
                ("fuse", {}, "fuse: argument 'prompt' is required"),
                ("fuse", {"prompt": "x", "temperature": 2}, "fuse: unknown argument 'temperature'"),
                (
                    "fuse",
                    {"prompt": "x", "mode": "loudest"},
                    "fuse: argument 'mode': Input should be 'best-of'",
                ),
                (
                    "fuse",
                    {"prompt": "x", "pool": "a,b"},
                    "fuse: argument 'pool': Input should be a valid list",
                ),
                ("fuse", {"prompt": "x", "pool": ["nope/model"]}, "unknown provider prefix 'nope'"),
                ("fuse", {"prompt": "x", "preset": "ghost"}, "unknown preset 'ghost'"),
                ("consult", {"prompt": ["a"]}, "consult: argument 'prompt': Input should be a valid string"),
                (
                    "review_diff",
                    {"min_agreement": "2"},
                    "review_diff: argument 'min_agreement': Input should be a valid integer",
                ),
                (
                    "review_diff",
                    {"diff": "x", "base": "main"},
                    "review_diff: give either diff or base, not both",
                ),
                ("summon", {}, "unknown tool 'summon': polyfuse offers fuse, consult, review_diff"),
            ]
            for name, args, message in cases:
                result = await client.call_tool(name, args)
                assert result.is_error and message in text(result), (name, args, text(result))
                assert "\n" not in text(result) and "Traceback" not in text(result)
            ok = await client.call_tool("fuse", {"prompt": "capital of France?"})
            assert not ok.is_error and ok.structured_content["answer"] == "Paris"
        assert len(up.requests) == 1  # no bad call reached a model


async def test_recursion_guard_over_http_and_stdio(tmp_path):
    with FakeUpstream({"a": Behaviour(text="Paris")}) as up:
        config = fake_config(tmp_path, up.base_url, ["a"])
        with HttpServer(tmp_path, config) as server:
            async with server.client({"X-Polyfuse-Depth": "3"}) as deep:
                refused = await deep.call_tool("fuse", {"prompt": "loop?"})
            assert refused.is_error and text(refused).startswith("recursion guard: this call already passed")
            async with server.client({"X-Polyfuse-Depth": "1"}) as one:
                ok = await one.call_tool("fuse", {"prompt": "loop?"})
            assert not ok.is_error
            assert up.headers[-1]["x-polyfuse-depth"] == "2"
        async with stdio_client(tmp_path, config, env={"POLYFUSE_DEPTH": "3"}) as deep:
            refused = await deep.call_tool("consult", {"prompt": "loop?"})
        assert refused.is_error and "limit 2, [server] max_depth" in text(refused)
        assert len(up.requests) == 1


async def test_review_diff_gates_on_agreement_over_http(tmp_path):
    root = tmp_path / "repo"
    repo(root)
    reviews = {
        "a": Behaviour(text=comments(EVAL, UNUSED)),
        "b": Behaviour(text=comments(EVAL, G)),
        "c": Behaviour(text=comments(EVAL)),
    }
    with FakeUpstream(reviews) as up:
        config = fake_config(tmp_path, up.base_url, ["a", "b", "c"])
        with HttpServer(root, config, args=["--root", str(root)]) as server:
            async with server.client() as client:
                by_base = await client.call_tool("review_diff", {"base": "main", "min_agreement": 2})
                diff = subprocess.run(
                    ["git", "-C", str(root), "diff", "main"], capture_output=True, text=True
                )
                by_diff = await client.call_tool("review_diff", {"diff": diff.stdout, "min_agreement": 3})
    assert not by_base.is_error, text(by_base)
    out = by_base.structured_content
    assert [(c["line"], len(c["raised_by"])) for c in out["comments"]] == [(4, 3)]
    assert sorted(c["line"] for c in out["disputed"]) == [1, 8] and out["min_agreement"] == 2
    assert "disputed (raised by fewer than 2 of 3 reviewers)" in text(by_base)
    assert not by_diff.is_error and [c["line"] for c in by_diff.structured_content["comments"]] == [4]


def test_http_on_a_public_address_without_keys_is_refused(tmp_path):
    (tmp_path / "polyfuse.toml").write_text("")
    proc = subprocess.run(
        [*MCP, "--http", "0", "--host", "0.0.0.0"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "refusing to serve MCP on 0.0.0.0 without keys" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


async def test_http_with_server_keys_needs_the_bearer_key(tmp_path):
    with FakeUpstream({"a": Behaviour(text="Paris")}) as up:
        config = fake_config(tmp_path, up.base_url, ["a"], extra='[server]\napi_keys = ["k-123"]\n')
        with HttpServer(tmp_path, config) as server:
            async with server.client({"Authorization": "Bearer k-123"}) as client:
                assert not (await client.call_tool("fuse", {"prompt": "x"})).is_error
            import httpx2

            r = httpx2.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
            assert r.status_code == 401 and "Bearer" in r.json()["error"]


def test_an_invalid_depth_variable_is_one_line_exit_2(tmp_path):
    (tmp_path / "polyfuse.toml").write_text("")
    proc = subprocess.run(
        MCP, cwd=tmp_path, env={**ENV, "POLYFUSE_DEPTH": "many"}, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: POLYFUSE_DEPTH must be a small non-negative integer (got 'many')"
    )


def test_help_lists_the_mcp_server_and_the_github_review():
    top = subprocess.run([*MCP[:-2], "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert "mcp     Serve fuse, consult and review_diff as MCP tools" in top.stdout
    review = subprocess.run(
        [*MCP[:-2], "code", "review", "--help"], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert (
        "--github" in review.stdout
        and "--min-agreement" in review.stdout
        and "--format [text|json|sarif|github]" in review.stdout
    )


async def test_http_clients_get_the_servers_model_policy_stdio_the_clis(tmp_path):
    """Over HTTP a client is not the operator: a raw URL it names is refused before anything is fetched (as
    ``polyfuse serve`` does); over stdio the agent the user launched keeps the CLI's freedom."""
    with (
        FakeUpstream({"a": Behaviour(text="Paris")}) as up,
        FakeUpstream({"x": Behaviour(text="Rome")}) as other,
    ):
        config = fake_config(tmp_path, up.base_url, ["a"])
        foreign = f"{other.base_url}#x"
        with HttpServer(tmp_path, config) as server:
            async with server.client() as client:
                for args in ({"pool": [foreign]}, {"judge": foreign, "mode": "best-of"}):
                    refused = await client.call_tool("fuse", {"prompt": "capital?", **args})
                    assert refused.is_error and "not allowed" in text(refused), text(refused)
                ok = await client.call_tool("fuse", {"prompt": "capital?"})
                assert not ok.is_error and ok.structured_content["answer"] == "Paris"
        assert other.requests == []
        async with stdio_client(tmp_path, config) as client:
            ok = await client.call_tool("fuse", {"prompt": "capital?", "pool": [foreign]})
        assert not ok.is_error and ok.structured_content["answer"] == "Rome"
        assert len(other.requests) == 1


@pytest.mark.parametrize(
    ("toml", "what"),
    [
        ('[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "HOME"\n', "[providers]"),
        ('[log]\nurl = "postgresql://u:p@127.0.0.1:9/x"\n', "[log] url"),
        ("[code]\nallow_weak_sandbox = true\n", "allow_weak_sandbox"),
    ],
)
def test_the_workspace_config_an_agent_starts_it_in_cannot_take_keys_or_safety_elsewhere(
    tmp_path, toml, what
):
    """An agent launches `polyfuse mcp` in the repository it works on; that repository's polyfuse.toml may not
    point provider keys, the run log or the sandbox elsewhere (as for `polyfuse lsp`). --config trusts it."""
    (tmp_path / "polyfuse.toml").write_text(toml)
    proc = subprocess.run(MCP, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert what in proc.stderr and "polyfuse mcp --config FILE" in proc.stderr
    trusted = subprocess.run(
        [*MCP, "--config", "polyfuse.toml", "--no-log"],
        cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr  # served stdio until end of input
