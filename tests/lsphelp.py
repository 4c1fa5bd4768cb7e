"""A real LSP client (pygls) driving ``polyfuse lsp`` over stdio, recording what the server tells it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from polyfuse.testing.upstream import FakeUpstream

SOURCE = 'API_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"\n\n\ndef add(a, b):\n    """Add.\n\n    >>> add(2, 3)\n    5\n    """\n    \n'
CURSOR = types.Position(line=9, character=4)


class Client(LanguageClient):
    """Records log messages, shown messages and progress notifications; accepts progress tokens."""

    def __init__(self) -> None:
        super().__init__("polyfuse-test", "1")
        self.logs: list[str] = []
        self.shown: list[str] = []
        self.progress: list[Any] = []

        @self.feature(types.WINDOW_LOG_MESSAGE)
        def log_message(params: types.LogMessageParams) -> None:
            self.logs.append(params.message)

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        def show_message(params: types.ShowMessageParams) -> None:
            self.shown.append(params.message)

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create(params: types.WorkDoneProgressCreateParams) -> None:
            self.progress.append(("create", params.token))

        @self.feature(types.PROGRESS)
        def progress(params: types.ProgressParams) -> None:
            self.progress.append((params.token, params.value))


async def start(
    cwd: Path,
    options: dict | None = None,
    *,
    resolve: bool = True,
    root: Path | None = None,
    progress: bool = False,
) -> Client:
    """Start ``polyfuse lsp`` in ``cwd`` and initialize it (rootUri ``root``; none when None)."""
    client = Client()
    await client.start_io(sys.executable, "-m", "polyfuse.cli.main", "lsp", cwd=str(cwd))
    caps = types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            code_action=types.CodeActionClientCapabilities(
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"] if resolve else [])
            )
        ),
        window=types.WindowClientCapabilities(work_done_progress=progress),
    )
    params = types.InitializeParams(
        capabilities=caps,
        root_uri=root.as_uri() if root is not None else None,
        initialization_options=options or {},
    )
    result = await asyncio.wait_for(client.initialize_async(params), 60)
    client.initialized(types.InitializedParams())
    client.capabilities = result.capabilities
    return client


def open_doc(client: LanguageClient, path: Path, text: str = SOURCE) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        )
    )
    return uri


def change(client: LanguageClient, uri: str, text: str, version: int = 2) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


def inline_params(uri: str, position: types.Position = CURSOR) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=position,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )


async def inline(
    client: LanguageClient, uri: str, position: types.Position = CURSOR, timeout: float = 60
) -> types.InlineCompletionList:
    return await asyncio.wait_for(
        client.text_document_inline_completion_async(inline_params(uri, position)), timeout
    )


async def stop(client: LanguageClient) -> None:
    try:
        await asyncio.wait_for(client.shutdown_async(None), 30)
        client.exit(None)
    finally:
        await client.stop()


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    """Poll ``condition()`` every 20 ms; fail after ``timeout`` seconds saying what did not happen."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g}s")
        await asyncio.sleep(0.02)


def pool(up: FakeUpstream, *models: str, **settings: Any) -> dict:
    """initializationOptions: a pool of fake-upstream models (the first one also judges)."""
    ids = [f"{up.base_url}#{m}" for m in models]
    return {"pool": ids, "judge": settings.pop("judge", ids[0]), "context_tokens": 500, **settings}
