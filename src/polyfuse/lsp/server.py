"""The language server over stdio (pygls): thin handlers over the code tasks.

- ``initialize`` loads the configuration and starts loading the models in the background (``warmup.py``,
  reported with ``$/progress`` from ``initialized`` on); a request that comes earlier waits for them.
- ``textDocument/inlineCompletion`` (registered with options, or pygls would not advertise it) and
  ``textDocument/completion`` answer through ``completions.py``: fast, debounced, superseded by a newer request,
  the fused answer served at the same spot next time. "No suggestion" (nothing passed the checks, a member failed,
  a timeout) is an empty list plus a ``window/logMessage`` line, never an error. Each item carries the
  ``polyfuse.accepted`` command (suggestion, run and member), which the editor runs when the user takes it: the
  server records it in the run log (``polyfuse log stats`` shows the acceptance rate).
- Code actions on a selection: explain (a comment above it), fix, document (edits of the file), generate tests
  (a new test file), computed on ``codeAction/resolve`` when the client resolves edits lazily, else at once.
- Typing cancels: a ``didChange`` cancels the document's work in flight (and every model call under it), as
  does ``$/cancelRequest``. A client's mistake (an unknown document, a position outside it, a malformed
  context) is InvalidParams; the server goes on. Configuration: ``polyfuse.toml`` of the workspace, then the
  client's ``initializationOptions`` (``[code]`` keys).
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
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from ..code.context import find_root
from ..code.task import CodeEnv
from ..config import Config, check_workspace_config, load_config
from ..errors import PolyfuseError, UserError
from ..providers.registry import ProviderHub
from ..redaction import Redactor, provider_keys
from ..store import LogError, open_log
from ..types import Message
from .actions import ACTIONS, resolve_action
from .completions import Completions, Served, SuggestionRecorder
from .protocol import Protocol, check_inline_context, offset_of, open_document
from .warmup import Warmup

__all__ = ["PolyfuseServer", "build_server", "ACCEPTED"]

_LOG = logging.getLogger("polyfuse.lsp")
ACCEPTED = "polyfuse.accepted"
T = TypeVar("T")


class PolyfuseServer(LanguageServer):
    def __init__(self, config_path: str | None = None) -> None:
        from .. import __version__

        super().__init__("polyfuse", __version__, protocol_cls=Protocol)
        self.config_path = config_path
        self.config: Config = Config()
        self.overrides: dict[str, Any] = {}
        self.hub: ProviderHub | None = None
        self.recorder: SuggestionRecorder | None = None
        self.root: Path | None = None  # the workspace root; None when the client sent none
        self.pool_size = 0
        self.warmup = Warmup(self)
        self.completions = Completions(self)
        self.inflight: dict[str, set[asyncio.Task[Any]]] = {}  # code actions per document

    def env(self, task: str = "lsp") -> CodeEnv:
        if self.hub is None:
            self.hub = ProviderHub.from_config(self.config)
        run_log = self.recorder.run_log if self.recorder is not None else None
        return CodeEnv.create(self.config, self.hub, run_log=run_log, task=task, **self.overrides)

    def root_for(self, path: Path) -> Path:
        """Where a document's related files come from: the workspace root when the file is inside it, else the
        file's own git work tree (or its directory)."""
        if self.root is not None and path.resolve().is_relative_to(self.root.resolve()):
            return self.root
        return find_root(path)

    def log_line(self, level: types.MessageType, text: str) -> None:
        self.window_log_message(types.LogMessageParams(level, f"polyfuse: {text}"))

    def _open_log(self) -> None:
        """The run log, for suggestions and runs; an editor session keeps working when it cannot be opened."""
        if not self.config.log.enabled:
            return
        # keys an upstream echoes back stay out of stored texts
        redact = Redactor(provider_keys(self.hub)) if self.hub is not None else None
        try:
            self.recorder = SuggestionRecorder(open_log(self.config.log, redact=redact))
        except LogError as exc:
            self.log_line(types.MessageType.Warning, f"run log off: {exc}")

    async def guarded(self, uri: str, work: Callable[[], Awaitable[T]]) -> T:
        """A code action's work, cancellable by typing in ``uri``; user mistakes become protocol errors."""
        task = asyncio.current_task()
        assert task is not None
        self.inflight.setdefault(uri, set()).add(task)
        try:
            return await work()
        except UserError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None
        except PolyfuseError as exc:
            raise JsonRpcInternalError(str(exc)) from None
        finally:
            self.inflight.get(uri, set()).discard(task)

    def cancel_inflight(self, uri: str) -> int:
        tasks = self.inflight.pop(uri, set())
        for t in tasks:
            t.cancel()
        return len(tasks) + self.completions.changed(uri)


def _path(uri: str) -> Path:
    return Path(to_fs_path(uri) or "untitled.py")


def _accepted_command(served: Served) -> types.Command:
    info = {"suggestion": served.suggestion, "run": served.run_id, "member": served.member}
    return types.Command(title="polyfuse: accepted", command=ACCEPTED, arguments=[info])


async def _serve(ls: PolyfuseServer, uri: str, position: types.Position, check: Any = None) -> Served:
    doc = open_document(ls.workspace, uri)
    offset = offset_of(doc, position)
    if check is not None:
        check(doc)
    served = await ls.completions.complete(uri, _path(uri), doc.source, offset)
    if not served.insertion:
        ls.log_line(
            types.MessageType.Info, f"no suggestion at {position.line}:{position.character}: {served.reason}"
        )
    return served


def build_server(config_path: str | None = None) -> PolyfuseServer:
    server = PolyfuseServer(config_path)

    @server.feature(types.INITIALIZE)
    def initialize(ls: PolyfuseServer, params: types.InitializeParams) -> None:
        root = ls.workspace.root_path
        ls.root = Path(root) if root else None
        toml = ls.root / "polyfuse.toml" if ls.root else None
        path = ls.config_path or (str(toml) if toml is not None and toml.is_file() else None)
        try:
            ls.config = load_config(path)
            if ls.config_path is None and path is not None:
                check_workspace_config(ls.config, path, "polyfuse lsp")
            options = params.initialization_options or {}
            if not isinstance(options, dict):
                raise JsonRpcInvalidParams("initializationOptions must be an object of [code] settings")
            ls.overrides = dict(options)
            env = ls.env("complete")  # validates the settings now, not on the first keystroke
            ls.pool_size = len(env.request([Message(role="user", content="-")]).pool)
        except (UserError, ValidationError) as exc:
            raise JsonRpcInvalidParams(f"polyfuse configuration: {exc}") from None
        ls._open_log()
        ls.warmup.start(env)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: PolyfuseServer, params: types.InitializedParams) -> None:
        window = ls.client_capabilities.window
        supports = bool(window and window.work_done_progress)
        await ls.warmup.report(supports, ls.work_done_progress.create_async)

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: PolyfuseServer, *args: Any) -> None:
        for uri in list(ls.inflight):
            ls.cancel_inflight(uri)
        if ls.warmup.task is not None:
            ls.warmup.task.cancel()
            await asyncio.wait([ls.warmup.task], timeout=10)
        await ls.completions.aclose()  # before the models are unloaded: their calls stop first
        if ls.hub is not None:
            await ls.hub.aclose()
            ls.hub = None
        if ls.recorder is not None:
            await ls.recorder.aclose()
            ls.recorder = None

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: PolyfuseServer, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        ls.completions.opened(item.uri, _path(item.uri), item.text)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: PolyfuseServer, params: types.DidSaveTextDocumentParams) -> None:
        uri = params.text_document.uri
        if uri in ls.workspace.text_documents:
            ls.completions.saved(uri, _path(uri), ls.workspace.get_text_document(uri).source)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: PolyfuseServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.cancel_inflight(params.text_document.uri)
        ls.completions.closed(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: PolyfuseServer, params: types.DidChangeTextDocumentParams) -> None:
        n = ls.cancel_inflight(params.text_document.uri)
        if n:
            _LOG.info("typing in %s cancelled %d request(s)", params.text_document.uri, n)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: PolyfuseServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        check = partial(check_inline_context, params=params)
        served = await _serve(ls, params.text_document.uri, params.position, check)
        if not served.insertion:
            return types.InlineCompletionList(items=[])
        rng = types.Range(start=params.position, end=params.position)
        item = types.InlineCompletionItem(
            insert_text=served.insertion, range=rng, command=_accepted_command(served)
        )
        return types.InlineCompletionList(items=[item])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["."]))
    async def completion(ls: PolyfuseServer, params: types.CompletionParams) -> types.CompletionList:
        served = await _serve(ls, params.text_document.uri, params.position)
        if not served.insertion:
            return types.CompletionList(is_incomplete=True, items=[])
        first = served.insertion.strip().splitlines()[0]
        item = types.CompletionItem(
            label=first[:60],
            kind=types.CompletionItemKind.Snippet,
            detail=f"polyfuse ({served.mode}): {served.member}",
            insert_text=served.insertion,
            insert_text_format=types.InsertTextFormat.PlainText,
            command=_accepted_command(served),
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.command(ACCEPTED)
    async def accepted(ls: PolyfuseServer, *args: Any) -> bool:
        info = args[0] if len(args) == 1 and isinstance(args[0], dict) else {}
        uid = info.get("suggestion")
        if not isinstance(uid, str) or not uid or len(uid) > 64:
            raise JsonRpcInvalidParams(
                f"{ACCEPTED} takes the object an item's command carries: {{suggestion, run, member}}"
            )
        if ls.recorder is None:
            return False
        return await ls.recorder.accepted(uid)

    kinds = [types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite, types.CodeActionKind.Source]

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=kinds, resolve_provider=True),
    )
    async def code_action(ls: PolyfuseServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        uri = params.text_document.uri
        open_document(ls.workspace, uri)
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
