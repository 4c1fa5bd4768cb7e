"""The language server over stdio (pygls): thin handlers over the code tasks.

- ``textDocument/inlineCompletion`` (registered with options, or pygls would not advertise it) answers with
  ``complete``'s fast path; the refined fusion is kept for the same position and served on the next request.
- ``textDocument/completion``: the same completion as one item, for editors without inline completion.
- Code actions on a selection: explain (a comment above it), fix, document (edits of the file), generate tests
  (a new test file), computed on ``codeAction/resolve`` when the client resolves edits lazily, else at once.
- Typing cancels: a ``didChange`` cancels the document's completions in flight (and every model call under
  them), as does ``$/cancelRequest``. Configuration: ``polyfuse.toml`` of the workspace, then the client's
  ``initializationOptions`` (``[code]`` keys). A user mistake becomes an InvalidParams error; the server goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from lsprotocol import types
from pydantic import ValidationError
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import to_fs_path
from pygls.workspace import TextDocument

from ..code.complete import CompleteResult, complete_text
from ..code.task import CodeEnv
from ..config import Config, load_config
from ..errors import NoSurvivorsError, PolyfuseError, UserError
from ..providers.registry import ProviderHub
from ..store import LogError, RunLog, open_log
from .actions import ACTIONS, resolve_action

__all__ = ["PolyfuseServer", "build_server"]

_LOG = logging.getLogger("polyfuse.lsp")
T = TypeVar("T")


_ANSWERED = object()  # a malformed request that already got its error response


class _Protocol(LanguageServerProtocol):
    """pygls logs a request whose params do not deserialise and never answers it, leaving the client waiting:
    answer it with the protocol error instead."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "id" in data and "method" in data:
                exc.message = f"invalid params for {data['method']}"
                self._send_response(data["id"], None, exc.to_response_error())
                return _ANSWERED
            raise

    def handle_message(self, message: Any) -> None:
        if message is not _ANSWERED:
            super().handle_message(message)


class PolyfuseServer(LanguageServer):
    def __init__(self, config_path: str | None = None) -> None:
        from .. import __version__

        super().__init__("polyfuse", __version__, protocol_cls=_Protocol)
        self.config_path = config_path
        self.config: Config | None = None
        self.overrides: dict[str, Any] = {}
        self.hub: ProviderHub | None = None
        self.run_log: RunLog | None = None
        self.root = Path.cwd()
        self.inflight: dict[str, set[asyncio.Task[Any]]] = {}
        self.refined: dict[tuple[str, int], asyncio.Task[CompleteResult]] = {}

    def env(self, task: str = "lsp") -> CodeEnv:
        if self.config is None or self.hub is None:
            self.config = self.config or load_config(self.config_path)
            self.hub = ProviderHub.from_config(self.config)
            self.run_log = self._open_log(self.config)
        return CodeEnv.create(self.config, self.hub, run_log=self.run_log, task=task, **self.overrides)

    def _open_log(self, config: Config) -> RunLog | None:
        """The run log, or None: an editor session keeps working when the log cannot be opened."""
        if not config.log.enabled:
            return None
        try:
            return open_log(config.log)
        except LogError as exc:
            self.window_log_message(
                types.LogMessageParams(types.MessageType.Warning, f"polyfuse: run log off: {exc}")
            )
            return None

    async def guarded(self, uri: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run a request's work, cancellable by typing in ``uri``; user mistakes become protocol errors."""
        task = asyncio.current_task()
        assert task is not None
        self.inflight.setdefault(uri, set()).add(task)
        try:
            return await work()
        except UserError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None
        except NoSurvivorsError as exc:
            raise JsonRpcInternalError(str(exc)) from None
        except PolyfuseError as exc:
            raise JsonRpcInternalError(str(exc)) from None
        finally:
            self.inflight.get(uri, set()).discard(task)

    def cancel_inflight(self, uri: str) -> int:
        tasks = self.inflight.pop(uri, set())
        for t in tasks:
            t.cancel()
        for key in [k for k in self.refined if k[0] == uri]:
            self.refined.pop(key).cancel()
        return len(tasks)


def _offset(doc: TextDocument, pos: types.Position) -> int:
    """The Python-string offset of a client position. Clients count characters in the negotiated encoding
    (UTF-16 code units by default), so "é😀x" puts x at character 3 for the client but index 2 for us."""
    lines = doc.source.split("\n")
    if not 0 <= pos.line < len(lines):
        raise JsonRpcInvalidParams(f"position {pos.line}:{pos.character} is outside the document")
    line = lines[pos.line]
    units = doc.position_codec.client_num_units(line)
    if not 0 <= pos.character <= units:
        raise JsonRpcInvalidParams(f"position {pos.line}:{pos.character} is outside the document")
    server = doc.position_codec.position_from_client_units(doc.lines, pos)
    return sum(len(ln) + 1 for ln in lines[: pos.line]) + server.character


def build_server(config_path: str | None = None) -> PolyfuseServer:
    server = PolyfuseServer(config_path)

    @server.feature(types.INITIALIZE)
    def initialize(ls: PolyfuseServer, params: types.InitializeParams) -> None:
        root = ls.workspace.root_path
        if root:
            ls.root = Path(root)
        path = ls.config_path or (
            str(ls.root / "polyfuse.toml") if (ls.root / "polyfuse.toml").is_file() else None
        )
        try:
            ls.config = load_config(path)
            options = params.initialization_options or {}
            if not isinstance(options, dict):
                raise JsonRpcInvalidParams("initializationOptions must be an object of [code] settings")
            ls.overrides = dict(options)
            ls.config.code.merged(**ls.overrides)  # validate now, not on the first keystroke
        except (UserError, ValidationError) as exc:
            raise JsonRpcInvalidParams(f"polyfuse configuration: {exc}") from None
        ls.hub = ProviderHub.from_config(ls.config)

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: PolyfuseServer, *args: Any) -> None:
        for uri in list(ls.inflight):
            ls.cancel_inflight(uri)
        if ls.hub is not None:
            await ls.hub.aclose()
            ls.hub = None
        if ls.run_log is not None:
            ls.run_log.close()
            ls.run_log = None

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: PolyfuseServer, params: types.DidChangeTextDocumentParams) -> None:
        n = ls.cancel_inflight(params.text_document.uri)
        if n:
            _LOG.info("typing in %s cancelled %d completion(s)", params.text_document.uri, n)

    async def completion_at(ls: PolyfuseServer, uri: str, position: types.Position) -> CompleteResult:
        doc = ls.workspace.get_text_document(uri)
        offset = _offset(doc, position)
        key = (uri, offset)
        pending = ls.refined.pop(key, None)
        if pending is not None and pending.done() and not pending.cancelled() and pending.exception() is None:
            return pending.result()  # the refined answer for the same spot, ready since last time
        path = Path(to_fs_path(uri) or "untitled.py")
        result = await complete_text(ls.env("complete"), doc.source, offset, path, fast=True, root=ls.root)
        if result.refined is not None:
            ls.refined[key] = result.refined
        return result

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: PolyfuseServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList | None:
        uri = params.text_document.uri
        result = await ls.guarded(uri, lambda: completion_at(ls, uri, params.position))
        rng = types.Range(start=params.position, end=params.position)
        return types.InlineCompletionList(
            items=[types.InlineCompletionItem(insert_text=result.insertion, range=rng)]
        )

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["."]))
    async def completion(ls: PolyfuseServer, params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        result = await ls.guarded(uri, lambda: completion_at(ls, uri, params.position))
        first = result.insertion.strip().splitlines()[0] if result.insertion.strip() else ""
        item = types.CompletionItem(
            label=first[:60] or "(polyfuse)",
            kind=types.CompletionItemKind.Snippet,
            detail=f"polyfuse: {result.member}",
            insert_text=result.insertion,
            insert_text_format=types.InsertTextFormat.PlainText,
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    kinds = [types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite, types.CodeActionKind.Source]

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=kinds, resolve_provider=True),
    )
    async def code_action(ls: PolyfuseServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        uri = params.text_document.uri
        ls.workspace.get_text_document(uri)
        caps = ls.client_capabilities.text_document
        resolve = caps and caps.code_action and caps.code_action.resolve_support
        lazy = bool(resolve and "edit" in resolve.properties)
        only = params.context.only
        out = []
        for name, spec in ACTIONS.items():
            if only and not any(spec.kind.startswith(k) for k in only):
                continue
            data = {"uri": uri, "range": [params.range.start.line, params.range.end.line], "action": name}
            action = types.CodeAction(title=spec.title, kind=spec.kind, data=data)
            out.append(action if lazy else await ls.guarded(uri, partial(resolve_action, ls, action)))
        return out

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: PolyfuseServer, action: types.CodeAction) -> types.CodeAction:
        data = action.data if isinstance(action.data, dict) else {}
        return await ls.guarded(str(data.get("uri", "")), lambda: resolve_action(ls, action))

    return server
