"""The language server through a real LSP client over stdio: initialize, code actions with workspace edits,
malformed requests, shutdown. Completion has its own module (test_lsp_completion.py). Models are a real
OpenAI-compatible HTTP upstream on loopback."""

from __future__ import annotations

import asyncio
import sys

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient

from lsphelp import open_doc, start, stop
from polyfuse.testing.upstream import Behaviour, FakeUpstream

FIX = "app.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"


@pytest.fixture
def upstream():
    with FakeUpstream({"fixer": Behaviour(text=FIX)}) as up:
        yield up


def _pool(up: FakeUpstream, model: str) -> dict:
    m = f"{up.base_url}#{model}"
    return {"pool": [m], "judge": m, "context_tokens": 500}


async def test_code_action_fix_returns_a_workspace_edit(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    buggy = "def add(a, b):\n    return a - b\n"
    (tmp_path / "app.py").write_text(buggy)
    client = await start(tmp_path, _pool(upstream, "fixer"), root=tmp_path)
    try:
        uri = open_doc(client, tmp_path / "app.py", buggy)
        rng = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=1, character=0))
        actions = await client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=rng,
                context=types.CodeActionContext(diagnostics=[], only=[types.CodeActionKind.QuickFix]),
            )
        )
        assert [a.title for a in actions] == ["polyfuse: fix this code"] and actions[0].edit is None
        resolved = await client.code_action_resolve_async(actions[0])
        edit = resolved.edit.changes[uri][0]
        assert edit.new_text == "def add(a, b):\n    return a + b\n"
        assert (tmp_path / "app.py").read_text() == buggy  # the editor applies edits, not the server
    finally:
        await stop(client)


async def test_eager_code_actions_when_the_client_cannot_resolve(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    buggy = "def add(a, b):\n    return a - b\n"
    client = await start(tmp_path, _pool(upstream, "fixer"), resolve=False, root=tmp_path)
    try:
        uri = open_doc(client, tmp_path / "app.py", buggy)
        actions = await client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=types.Range(
                    start=types.Position(line=1, character=0), end=types.Position(line=1, character=0)
                ),
                context=types.CodeActionContext(diagnostics=[], only=[types.CodeActionKind.QuickFix]),
            )
        )
        assert actions[0].edit.changes[uri][0].new_text.endswith("return a + b\n")
    finally:
        await stop(client)


async def test_invalid_initialization_options_are_a_protocol_error(tmp_path):
    client = LanguageClient("polyfuse-test", "1")
    await client.start_io(sys.executable, "-m", "polyfuse.cli.main", "lsp", cwd=str(tmp_path))
    try:
        with pytest.raises(JsonRpcException) as info:
            await client.initialize_async(
                types.InitializeParams(
                    capabilities=types.ClientCapabilities(), initialization_options={"colour": 1}
                )
            )
        assert "colour" in str(info.value)
    finally:
        client.exit(None)
        await client.stop()


def test_malformed_wire_messages_get_protocol_errors_and_the_server_goes_on(tmp_path):
    """Raw bytes on stdio: params that do not deserialise (pygls alone would never answer), broken JSON."""
    import json
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "polyfuse.cli.main", "lsp"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )

    def send(body: bytes) -> None:
        proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        proc.stdin.flush()

    def recv() -> dict:
        header = b""
        while not header.endswith(b"\r\n\r\n"):
            header += proc.stdout.read(1)
        n = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        return json.loads(proc.stdout.read(n))

    try:
        send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
            ).encode()
        )
        caps = recv()["result"]["capabilities"]
        assert (
            "inlineCompletionProvider" in caps
            and "codeActionProvider" in caps
            and "completionProvider" in caps
        )
        send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "textDocument/inlineCompletion",
                    "params": {"textDocument": 7},
                }
            ).encode()
        )
        assert recv() == {
            "jsonrpc": "2.0",
            "id": 2,
            "error": {"code": -32602, "message": "invalid params for textDocument/inlineCompletion"},
        }
        context = {"textDocument": {"uri": "file:///x.py"}, "position": {"line": 0, "character": 0}}
        context["context"] = {"triggerKind": 9}  # not a trigger kind
        message = {"jsonrpc": "2.0", "id": 5, "method": "textDocument/inlineCompletion", "params": context}
        send(json.dumps(message).encode())
        assert recv()["error"]["code"] == -32602
        send(b'{"jsonrpc": "2.0", "id": 3, "method": ')  # not JSON at all
        send(json.dumps({"jsonrpc": "2.0", "id": 4, "method": "shutdown"}).encode())
        reply = recv()
        while reply.get("method"):  # skip notifications (window/showMessage about the broken message)
            reply = recv()
        assert reply["id"] == 4 and "error" not in reply
    finally:
        proc.kill()
        proc.wait()


def test_client_positions_count_utf16_units():
    from lsprotocol import types as lsp_types
    from pygls.exceptions import JsonRpcInvalidParams
    from pygls.workspace import TextDocument

    from polyfuse.lsp.protocol import offset_of as _offset

    doc = TextDocument("file:///x.py", "s = 'é😀x'\nnext\n")
    at = _offset(doc, lsp_types.Position(line=0, character=8))  # 😀 is two UTF-16 units
    assert doc.source[at] == "x"
    assert doc.source[_offset(doc, lsp_types.Position(line=1, character=2))] == "x"
    with pytest.raises(JsonRpcInvalidParams):
        _offset(doc, lsp_types.Position(line=0, character=11))


@pytest.mark.parametrize(
    ("toml", "what"),
    [
        ('[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n', "[providers]"),
        ('[log]\nurl = "postgresql://u:p@127.0.0.1:9/x"\n', "[log] url"),
        ("[code]\nallow_weak_sandbox = true\n", "allow_weak_sandbox"),
    ],
)
async def test_a_workspace_config_cannot_take_keys_or_safety_elsewhere(tmp_path, toml, what):
    """Opening a repository reads its polyfuse.toml: provider settings there could send the user's keys to the
    repository's own host. Refused at initialize, saying what and how to trust the file."""
    (tmp_path / "polyfuse.toml").write_text(toml)
    client = LanguageClient("polyfuse-test", "1")
    await client.start_io(sys.executable, "-m", "polyfuse.cli.main", "lsp", cwd=str(tmp_path))
    try:
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(
                client.initialize_async(
                    types.InitializeParams(
                        capabilities=types.ClientCapabilities(), root_uri=tmp_path.as_uri()
                    )
                ),
                30,
            )
        assert what in str(info.value) and "polyfuse lsp --config" in str(info.value)
    finally:
        client.exit(None)
        await client.stop()
    # the same file, trusted explicitly, is used (an unreachable PostgreSQL only turns the run log off)
    trusted = LanguageClient("polyfuse-test", "1")
    argv = ["-m", "polyfuse.cli.main", "lsp", "--config", str(tmp_path / "polyfuse.toml")]
    await trusted.start_io(sys.executable, *argv, cwd=str(tmp_path))
    try:
        with FakeUpstream() as up:
            member = f"{up.base_url}#a"
            params = types.InitializeParams(
                capabilities=types.ClientCapabilities(),
                root_uri=tmp_path.as_uri(),
                initialization_options={"pool": [member], "judge": member},
            )
            result = await asyncio.wait_for(trusted.initialize_async(params), 60)
            assert result.capabilities.inline_completion_provider is not None
    finally:
        trusted.exit(None)
        await trusted.stop()
