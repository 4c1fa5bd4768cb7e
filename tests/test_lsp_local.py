"""``polyfuse lsp`` on the two bundled models (real llama.cpp inference), started as a new user would: in an
empty directory, without a root, one file in it and one elsewhere. The models load at initialize (reported
with $/progress); a request sent right away waits for them and gets an answer, never an error."""

from __future__ import annotations

import asyncio

import pytest

from lsphelp import CURSOR, SOURCE, inline, open_doc, start, stop, until

pytestmark = pytest.mark.local


async def test_empty_directory_without_a_root_on_the_bundled_models(tmp_path):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mathx.py").write_text(SOURCE)
    options = {"preset": "local", "complete_max_tokens": 24, "latency_budget": 120}
    client = await start(cwd, options, progress=True)  # no rootUri
    try:
        inside = open_doc(client, cwd / "app.py")
        first = asyncio.ensure_future(inline(client, inside, timeout=300))  # before the models are loaded
        outside = open_doc(client, elsewhere / "mathx.py")
        answers = [await first, await inline(client, outside, timeout=300)]
        for answer in answers:
            if answer.items:
                assert answer.items[0].insert_text.strip() and answer.items[0].range.start == CURSOR
                assert answer.items[0].command.command == "polyfuse.accepted"
        # tiny models often write code that fails its checks: that is said in the log, not as an error
        empty = sum(not a.items for a in answers)
        await until(lambda: sum("no suggestion" in line for line in client.logs) == empty, "a log line each")
        tokens = [value for token, value in client.progress if token == "polyfuse/loading-models"]
        assert ("create", "polyfuse/loading-models") in client.progress
        kinds = [v["kind"] for v in tokens]
        assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds, tokens
        assert tokens[-1]["message"] == "ready: local/smollm2-135m, local/gemma3-270m"
        assert client.shown == []  # no error popped up
    finally:
        await stop(client)
