"""Loading the models when the editor connects, not on its first keystroke.

``Warmup.start`` resolves and loads every model of the completion pool in the background at ``initialize``; the
editor sees it as a ``$/progress`` task (when it supports server-initiated progress) from ``initialized`` on.
A request that arrives before the models are ready waits for them (``ready``): it does not fail. A model that
cannot load is reported once (``window/showMessage``) and the requests go on; they get no suggestion.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from ..code.complete import warm_models
from ..code.task import CodeEnv
from ..errors import PolyfuseError

__all__ = ["Warmup"]

_LOG = logging.getLogger("polyfuse.lsp")
_TOKEN = "polyfuse/loading-models"
_CREATE_TIMEOUT = 5.0  # a client that never answers window/workDoneProgress/create gets no progress


class Warmup:
    def __init__(self, server: LanguageServer) -> None:
        self.server = server
        self.task: asyncio.Task[None] | None = None
        self.error: str | None = None
        self.loaded: list[str] = []
        self._reporting = False

    def start(self, env: CodeEnv) -> None:
        self.task = asyncio.ensure_future(self._load(env))

    async def _load(self, env: CodeEnv) -> None:
        try:
            self.loaded = await warm_models(env, self._progress)
        except PolyfuseError as exc:  # a missing model file, an unknown id: say so, keep serving
            self.error = str(exc)
            self.server.window_show_message(
                types.ShowMessageParams(types.MessageType.Error, f"polyfuse: cannot load the models: {exc}")
            )

    def _progress(self, model_id: str, done: int, total: int) -> None:
        if self._reporting:
            report = types.WorkDoneProgressReport(message=f"{model_id} ready", percentage=100 * done // total)
            self.server.work_done_progress.report(_TOKEN, report)

    async def ready(self) -> None:
        """Wait until the load finished (successfully or not); never cancels the load itself."""
        if self.task is not None and not self.task.done():
            await asyncio.shield(self.task)

    async def report(self, supports_progress: bool, create: Callable[[str], Awaitable[object]]) -> None:
        """Show the load as a ``$/progress`` task, from ``initialized`` until the models are ready (a load that
        is already over is reported too: an editor may wait for the end before it asks for anything)."""
        if not supports_progress or self.task is None:
            return
        try:
            await asyncio.wait_for(create(_TOKEN), _CREATE_TIMEOUT)
        except (JsonRpcException, TimeoutError) as exc:  # the client refused: the load goes on unreported
            _LOG.info("no progress reporting: %s", exc)
            return
        progress = self.server.work_done_progress
        progress.begin(_TOKEN, types.WorkDoneProgressBegin(title="polyfuse: loading models", percentage=0))
        self._reporting = True
        await self.ready()
        self._reporting = False
        done = "failed: " + self.error if self.error else "ready: " + ", ".join(self.loaded)
        progress.end(_TOKEN, types.WorkDoneProgressEnd(message=done))
