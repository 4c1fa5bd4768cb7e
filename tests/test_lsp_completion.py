"""Inline completion through a real LSP client over stdio against ``polyfuse lsp``, with the models on a real
OpenAI-compatible HTTP upstream on loopback: the fast answer and the fused one at the same spot, cancellation
reaching every upstream call (the upstream sees the disconnect), "no suggestion" as an empty list, client
mistakes as InvalidParams, debounce, acceptance recorded in the run log, and the server started in an empty
directory without a root."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from conftest import upstream_picker
from lsphelp import CURSOR, SOURCE, change, inline, inline_params, open_doc, pool, start, stop, until
from polyfuse.testing.upstream import Behaviour, FakeUpstream

QUICK = "```python\nreturn a + b\n```"
SUM = "```python\nreturn sum((a, b))\n```"


@pytest.fixture
def upstream():
    behaviours = {
        "coder": Behaviour(text=QUICK),
        "quick": Behaviour(text=QUICK),
        "slow": Behaviour(text=SUM, latency=30),
        "later": Behaviour(text=SUM, latency=1.5),
        "later2": Behaviour(text=SUM, latency=1.5),
        "judge": Behaviour(reply=upstream_picker("sum(")),
        "broken": Behaviour(text="```python\nreturn a +* b\n```"),
        "down": Behaviour(statuses=[500] * 20),
    }
    with FakeUpstream(behaviours) as up:
        yield up


def _log_config(tmp_path) -> None:
    (tmp_path / "polyfuse.toml").write_text(f'[log]\npath = "{tmp_path / "runs.db"}"\n')


def _suggestion_stats(tmp_path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "polyfuse.cli.main",
        "log",
        "stats",
        "--json",
        "--db",
        str(tmp_path / "runs.db"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return {(s["model"].split("#")[-1], s["mode"]): s for s in json.loads(out.stdout)["suggestions"]}


async def test_one_model_answers_with_an_accepted_command_and_the_completion_fallback(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    _log_config(tmp_path)
    client = await start(tmp_path, pool(upstream, "coder"), root=tmp_path)
    try:
        assert client.capabilities.inline_completion_provider is not None
        assert "polyfuse.accepted" in client.capabilities.execute_command_provider.commands
        uri = open_doc(client, tmp_path / "app.py")
        res = await inline(client, uri)
        [item] = res.items
        assert item.insert_text == "return a + b" and item.range.start == CURSOR
        assert item.command.command == "polyfuse.accepted"
        info = item.command.arguments[0]
        assert info["member"].endswith("#coder") and info["run"] and info["suggestion"]
        comp = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=CURSOR)
        )
        assert comp.items[0].insert_text == "return a + b" and list(comp.items[0].command.arguments) == [info]
        sent = str(upstream.requests)
        assert "add(a, b)" in sent and "sk-proj-abcdefghij" not in sent and "REDACTED-1:openai-key" in sent
        # the editor runs the item's command when the user takes the suggestion
        run = types.ExecuteCommandParams(command=item.command.command, arguments=item.command.arguments)
        assert await client.workspace_execute_command_async(run) is True
        assert await client.workspace_execute_command_async(run) is False  # once
        with pytest.raises(JsonRpcException) as bad:
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="polyfuse.accepted", arguments=["nonsense"])
            )
        assert bad.value.code == -32602
    finally:
        await stop(client)
    stats = _suggestion_stats(tmp_path)
    assert stats[("coder", "single")]["shown"] == 1 and stats[("coder", "single")]["accepted"] == 1


async def test_the_fused_answer_is_served_at_the_same_spot_next_time(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    _log_config(tmp_path)
    options = pool(upstream, "quick", "later", "later2", judge=f"{upstream.base_url}#judge")
    client = await start(tmp_path, options, root=tmp_path)
    try:
        uri = open_doc(client, tmp_path / "app.py")
        first = (await inline(client, uri)).items[0]
        assert first.insert_text == "return a + b" and first.command.arguments[0]["member"].endswith("#quick")
        again = (await inline(client, uri)).items[
            0
        ]  # the fusion is still running: the same answer, no new call
        assert again.insert_text == "return a + b" and list(again.command.arguments) == list(
            first.command.arguments
        )
        # 3 members, then the judge twice: its label probabilities (this upstream sends no logprobs), then the
        # written verdict it falls back to
        await until(lambda: len(upstream.requests) == 5 and upstream.active == 0, "the judge's verdict")
        fused = (await inline(client, uri)).items[0]
        info = fused.command.arguments[0]
        assert fused.insert_text == "return sum((a, b))" and info["member"].split("#")[-1] in (
            "later",
            "later2",
        )
        assert info["run"] == first.command.arguments[0]["run"]  # the same completion run, refined
        assert len(upstream.requests) == 5  # repeats cost no model call
        run = types.ExecuteCommandParams(command="polyfuse.accepted", arguments=fused.command.arguments)
        assert await client.workspace_execute_command_async(run) is True
    finally:
        await stop(client)
    stats = _suggestion_stats(tmp_path)
    assert (stats[("quick", "fast")]["shown"], stats[("quick", "fast")]["accepted"]) == (1, 0)
    fused_row = next(v for (m, mode), v in stats.items() if mode == "fused")
    assert (fused_row["shown"], fused_row["accepted"]) == (1, 1)


async def test_typing_after_a_fast_answer_cancels_the_fusion_still_running(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    client = await start(tmp_path, pool(upstream, "quick", "slow"), root=tmp_path)
    try:
        uri = open_doc(client, tmp_path / "app.py")
        assert (await inline(client, uri)).items[0].insert_text == "return a + b"
        await until(lambda: upstream.active == 1, "the slow member working on for the fused answer")
        change(client, uri, SOURCE + "x")
        await until(lambda: upstream.disconnects == 1, "the upstream seeing the slow call cancelled")
        await until(lambda: upstream.active == 0, "no call left")
        # a request in another document cancels a fusion still refining: it would only make that request wait
        assert (await inline(client, uri)).items[0].insert_text == "return a + b"
        await until(lambda: upstream.active == 1, "the first document's fusion going on")
        other = open_doc(client, tmp_path / "other.py")
        assert (await inline(client, other)).items[0].insert_text == "return a + b"
        await until(lambda: upstream.disconnects == 2, "the first document's fusion cancelled")
        await until(lambda: upstream.active == 1, "the second document's fusion going on")
        assert upstream.disconnects == 2
    finally:
        await stop(client)


async def test_cancel_request_and_typing_stop_every_model_call_under_the_request(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    client = await start(tmp_path, pool(upstream, "slow", "slow", latency_budget=0), root=tmp_path)
    try:
        uri = open_doc(client, tmp_path / "app.py")
        fut = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri))
        await until(lambda: upstream.active == 2, "both members called")
        msg_id = next(reversed(client.protocol._request_futures))
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(fut, 30)
        assert info.value.code == -32800  # RequestCancelled
        await until(lambda: upstream.disconnects == 2, "the upstream seeing both calls cancelled")
        pending = asyncio.ensure_future(inline(client, uri))
        await until(lambda: upstream.active == 2, "both members called again")
        change(client, uri, SOURCE + "x")
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(pending, 30)
        assert info.value.code == -32800
        await until(lambda: upstream.disconnects == 4, "the upstream seeing the typing cancel both calls")
        await until(lambda: upstream.active == 0, "no call left")
    finally:
        await stop(client)


@pytest.mark.parametrize(
    "members, options, reason",
    [
        (("broken",), {}, "no candidate passed the checks"),
        (("down",), {}, "all 1 pool members failed"),
        (("slow",), {"latency_budget": 1}, "within the latency budget (1s)"),
    ],
    ids=["nothing-passes", "member-fails", "timeout"],
)
async def test_no_suggestion_is_an_empty_list_and_a_log_line(tmp_path, upstream, members, options, reason):
    (tmp_path / ".git").mkdir()
    client = await start(tmp_path, pool(upstream, *members, **options), root=tmp_path)
    try:
        uri = open_doc(client, tmp_path / "app.py")
        res = await inline(client, uri, timeout=30)
        assert list(res.items) == []
        comp = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=CURSOR)
        )
        assert list(comp.items) == []
        await until(lambda: any(reason in line for line in client.logs), f"a log line saying {reason!r}")
        assert all(line.startswith("polyfuse: no suggestion at 9:4") for line in client.logs), client.logs
    finally:
        await stop(client)


async def test_client_mistakes_are_invalid_params_and_the_server_goes_on(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    client = await start(tmp_path, pool(upstream, "coder"), root=tmp_path)
    try:
        uri = open_doc(client, tmp_path / "app.py")
        outside = types.Position(line=500, character=0)
        selected = types.SelectedCompletionInfo(
            range=types.Range(
                start=types.Position(line=9, character=0), end=types.Position(line=90, character=0)
            ),
            text="x",
        )
        bad_context = inline_params(uri)
        bad_context.context.selected_completion_info = selected
        cases = [
            (inline_params((tmp_path / "never-opened.py").as_uri()), "is not open"),
            (inline_params(uri, outside), "outside the document"),
            (bad_context, "outside the document"),
        ]
        for params, message in cases:
            with pytest.raises(JsonRpcException) as info:
                await asyncio.wait_for(client.text_document_inline_completion_async(params), 30)
            assert info.value.code == -32602 and message in str(info.value)
        assert (await inline(client, uri)).items[0].insert_text == "return a + b"  # still serving
    finally:
        await stop(client)


async def test_a_burst_of_requests_is_debounced_to_one_model_call(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    client = await start(tmp_path, pool(upstream, "coder", debounce=3), root=tmp_path)
    try:
        uri = open_doc(client, tmp_path / "app.py")
        await inline(client, uri)  # the first request after a pause goes at once
        assert len(upstream.requests) == 1
        change(client, uri, "# v2\n" + SOURCE)  # the cursor's line is 10 now
        spots = (types.Position(line=10, character=0), types.Position(line=10, character=4))
        burst = [asyncio.ensure_future(inline(client, uri, pos)) for pos in spots]
        done = await asyncio.gather(*burst, return_exceptions=True)
        assert isinstance(done[0], JsonRpcException) and done[0].code == -32800  # superseded while waiting
        assert "return a + b" in done[1].items[0].insert_text
        assert len(upstream.requests) == 2  # the superseded request never reached a model
    finally:
        await stop(client)


@pytest.mark.parametrize("where", ["no-root-file-in-cwd", "file-outside-the-root"])
async def test_started_in_an_empty_directory_without_a_root_it_answers(tmp_path, upstream, where):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "app.py").write_text(SOURCE)  # on disk too: the related-files walk reads it
    file = cwd / "app.py" if where == "no-root-file-in-cwd" else elsewhere / "app.py"
    root = None if where == "no-root-file-in-cwd" else cwd
    client = await start(cwd, pool(upstream, "coder", latency_budget=20), root=root)
    try:
        uri = open_doc(client, file)
        assert (await inline(client, uri, timeout=25)).items[0].insert_text == "return a + b"
    finally:
        await stop(client)
