"""The language server through a real LSP client over stdio: initialize, didOpen, inline completion, the
completion fallback, code actions with workspace edits, cancellation by typing and by $/cancelRequest, malformed
requests, shutdown. Models are a real OpenAI-compatible HTTP upstream on loopback (and, marked local, the bundled
models)."""

from __future__ import annotations

import asyncio
import sys

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient

from polyfuse.testing.upstream import Behaviour, FakeUpstream

SOURCE = 'API_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"\n\n\ndef add(a, b):\n    """Add.\n\n    >>> add(2, 3)\n    5\n    """\n    \n'
FIX = "app.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"


@pytest.fixture
def upstream():
    behaviours = {
        "coder": Behaviour(text="```python\nreturn a + b\n```"),
        "slow": Behaviour(text="```python\nreturn a + b\n```", latency=20),
        "fixer": Behaviour(text=FIX),
    }
    with FakeUpstream(behaviours) as up:
        yield up


async def start(tmp_path, options: dict | None = None, resolve: bool = True) -> LanguageClient:
    client = LanguageClient("polyfuse-test", "1")
    await client.start_io(sys.executable, "-m", "polyfuse.cli.main", "lsp", cwd=str(tmp_path))
    caps = types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            code_action=types.CodeActionClientCapabilities(
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"] if resolve else [])
            )
        )
    )
    result = await client.initialize_async(
        types.InitializeParams(
            capabilities=caps, root_uri=tmp_path.as_uri(), initialization_options=options or {}
        )
    )
    client.initialized(types.InitializedParams())
    client.capabilities = result.capabilities
    return client


def open_doc(client: LanguageClient, path, text: str = SOURCE) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        )
    )
    return uri


async def stop(client: LanguageClient) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


def _pool(up: FakeUpstream, model: str) -> dict:
    m = f"{up.base_url}#{model}"
    return {"pool": [m], "judge": m, "context_tokens": 500}


async def test_inline_completion_fallback_and_redaction(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    client = await start(tmp_path, _pool(upstream, "coder"))
    try:
        assert client.capabilities.inline_completion_provider is not None
        assert client.capabilities.code_action_provider.resolve_provider
        uri = open_doc(client, tmp_path / "app.py")
        pos = types.Position(line=9, character=4)
        res = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=pos,
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
            )
        )
        assert res.items[0].insert_text == "return a + b"
        assert res.items[0].range.start == pos
        comp = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=pos)
        )
        assert comp.items[0].insert_text == "return a + b"
        sent = str(upstream.requests)
        assert "add(a, b)" in sent and "sk-proj-abcdefghij" not in sent and "REDACTED-1:openai-key" in sent
    finally:
        await stop(client)


async def test_typing_and_cancel_requests_stop_the_work_and_the_server_keeps_serving(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    client = await start(tmp_path, _pool(upstream, "slow"))
    try:
        uri = open_doc(client, tmp_path / "app.py")
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=9, character=4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
        pending = asyncio.ensure_future(client.text_document_inline_completion_async(params))
        while not upstream.active:
            await asyncio.sleep(0.05)
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=SOURCE + "x")],
            )
        )
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(pending, 30)
        assert info.value.code == -32800  # RequestCancelled
        assert upstream.active >= 1  # answered while the model was still working: not waited for
        # $/cancelRequest from the client works the same way
        fut = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
        while not upstream.active:
            await asyncio.sleep(0.05)
        msg_id = next(reversed(client.protocol._request_futures))
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(fut, 30)
        assert info.value.code == -32800 and upstream.active >= 1
        # malformed requests get protocol errors; the server answers the next one
        with pytest.raises(JsonRpcException) as info:
            await client.protocol.send_request_async("polyfuse/no-such-method", {})
        assert info.value.code == -32601
        bad = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=500, character=0),
            context=params.context,
        )
        with pytest.raises(JsonRpcException) as info:
            await client.text_document_inline_completion_async(bad)
        assert info.value.code == -32602 and "outside the document" in str(info.value)
        actions = await client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=types.Range(
                    start=types.Position(line=3, character=0), end=types.Position(line=9, character=0)
                ),
                context=types.CodeActionContext(diagnostics=[]),
            )
        )
        assert {a.title for a in actions} >= {"polyfuse: fix this code", "polyfuse: generate tests"}
    finally:
        await stop(client)


async def test_code_action_fix_returns_a_workspace_edit(tmp_path, upstream):
    (tmp_path / ".git").mkdir()
    buggy = "def add(a, b):\n    return a - b\n"
    (tmp_path / "app.py").write_text(buggy)
    client = await start(tmp_path, _pool(upstream, "fixer"))
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
    client = await start(tmp_path, _pool(upstream, "fixer"), resolve=False)
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


@pytest.mark.local
async def test_inline_completion_on_the_bundled_models(tmp_path):
    (tmp_path / ".git").mkdir()
    client = await start(tmp_path, {"preset": "local", "complete_max_tokens": 24, "latency_budget": 0})
    try:
        uri = open_doc(client, tmp_path / "app.py")
        res = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=9, character=4),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
            )
        )
        assert len(res.items) == 1 and res.items[0].insert_text.strip()
    except JsonRpcException as exc:  # every candidate failed its checks: said so, as a protocol error
        assert "no candidate passed the checks" in str(exc)
    finally:
        await stop(client)


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

    from polyfuse.lsp.server import _offset

    doc = TextDocument("file:///x.py", "s = 'é😀x'\nnext\n")
    at = _offset(doc, lsp_types.Position(line=0, character=8))  # 😀 is two UTF-16 units
    assert doc.source[at] == "x"
    assert doc.source[_offset(doc, lsp_types.Position(line=1, character=2))] == "x"
    with pytest.raises(JsonRpcInvalidParams):
        _offset(doc, lsp_types.Position(line=0, character=11))
