"""Inline completions for an editor: one quick answer per request, cancellable, never an error for "nothing".

Per document:

- a newer completion request cancels the older ones still running, and every model call under them;
- a request that comes within ``debounce`` seconds of the previous one waits that long first (a typing burst
  then costs one model call, not one per key);
- the related files are gathered once (at ``didOpen``, again on ``didSave``), off the event loop, so the
  prompt's stable part stays the same across keystrokes and a local model's KV cache stays valid; ``prime_cache``
  evaluates that part before the first request;
- after a fast answer the full fusion goes on for that spot; the next request at the same spot (same text, same
  offset) gets the fused answer when it is ready, and the fast one again (no new model calls) until then; a
  request elsewhere (any document) cancels it, so that no request waits behind a refinement;
- typing (``didChange``) and closing the document cancel all of it.

A request's outcome is a ``Served``: an insertion, or none with the reason (the language server answers an
empty list and logs the reason, never a JSON-RPC error).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..code.complete import CompleteResult, complete_text, prime_cache, related_context
from ..code.task import CodeEnv
from ..errors import PolyfuseError
from ..store import RunLog, Suggestion, record_acceptance, record_suggestion

if TYPE_CHECKING:
    from .server import PolyfuseServer

__all__ = ["Served", "Completions", "SuggestionRecorder"]

_LOG = logging.getLogger("polyfuse.lsp")
_MAX_DOCS = 256  # documents with state kept (least recently used dropped first)
_QUERY_CHARS = 20_000  # how much of a document ranks its related files


@dataclass(frozen=True)
class Served:
    insertion: str  # "" when there is no suggestion
    mode: str = ""  # single (a pool of one), fast (the first candidate that passed) or fused
    member: str | None = None
    model: str | None = None
    run_id: str = ""
    suggestion: str = ""  # the suggestion's id in the run log (what polyfuse.accepted names)
    latency: float = 0.0
    reason: str = ""  # why there is no suggestion

    def again(self, latency: float) -> Served:
        return Served(**{**self.__dict__, "latency": latency})


@dataclass
class _Spot:
    key: tuple[int, int]  # (hash of the text, offset)
    served: Served
    refined: asyncio.Task[CompleteResult] | None


@dataclass
class _Doc:
    path: Path
    root: Path
    requests: set[asyncio.Task[Any]] = field(default_factory=set)
    last: float = 0.0
    spot: _Spot | None = None
    context: asyncio.Task[str] | None = None
    priming: asyncio.Task[None] | None = None

    def cancel(self) -> int:
        """Cancel the requests in flight and the fusion still running for the last spot."""
        tasks = [t for t in self.requests if not t.done()]
        for t in tasks:
            t.cancel()
        self.requests.clear()
        if self.spot is not None and self.spot.refined is not None:
            self.spot.refined.cancel()
        self.spot = None
        return len(tasks)

    def close(self) -> list[asyncio.Future[Any]]:
        """Cancel everything of the document; returns what was cancelled (to be awaited)."""
        running: list[asyncio.Future[Any]] = [*self.requests]
        if self.spot is not None and self.spot.refined is not None:
            running.append(self.spot.refined)
        self.cancel()
        for t in (self.context, self.priming):
            if t is not None:
                t.cancel()
                running.append(t)
        return running


class SuggestionRecorder:
    """Writes shown and accepted suggestions to the run log off the event loop, in order (an acceptance never
    overtakes the suggestion it accepts). A failed write is logged, never the editor's problem."""

    def __init__(self, run_log: RunLog) -> None:
        self.run_log = run_log
        self._lock = asyncio.Lock()  # FIFO: writes happen in the order they were asked for
        self._pending: set[asyncio.Task[Any]] = set()

    async def _write(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, self.run_log, *args)

    def shown(self, suggestion: Suggestion) -> None:
        task = asyncio.ensure_future(self._write(record_suggestion, suggestion))
        self._pending.add(task)
        task.add_done_callback(self._done)

    async def accepted(self, uid: str) -> bool:
        return bool(await self._write(record_acceptance, uid))

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _LOG.warning("could not record a suggestion in %s: %s", self.run_log.where, task.exception())

    async def aclose(self) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)
        self.run_log.close()


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A fusion nobody asks about any more may end in an error (no survivors): that is no news to report."""
    if not task.cancelled() and task.exception() is not None:
        _LOG.info("the fusion behind a fast answer ended without one: %s", task.exception())


class Completions:
    def __init__(self, server: PolyfuseServer) -> None:
        self.server = server
        self.docs: OrderedDict[str, _Doc] = OrderedDict()

    # -- document life cycle ---------------------------------------------------------------------------------
    def _doc(self, uri: str, path: Path) -> _Doc:
        doc = self.docs.get(uri)
        if doc is None:
            doc = self.docs[uri] = _Doc(path, self.server.root_for(path))
            while len(self.docs) > _MAX_DOCS:
                self.docs.popitem(last=False)[1].close()  # nothing awaits them: they end on their own
        self.docs.move_to_end(uri)
        return doc

    def opened(self, uri: str, path: Path, text: str) -> None:
        """Gather the related files (and warm the models' caches with them) before the first request."""
        doc = self._doc(uri, path)
        self._refresh(doc, text)
        doc.priming = asyncio.ensure_future(self._prime(doc))

    def saved(self, uri: str, path: Path, text: str) -> None:
        self._refresh(self._doc(uri, path), text)

    def _refresh(self, doc: _Doc, text: str) -> None:
        if doc.context is not None:
            doc.context.cancel()
        env = self.server.env("complete")
        query = text[:_QUERY_CHARS]
        doc.context = asyncio.ensure_future(
            asyncio.to_thread(related_context, env, doc.path, doc.root, query)
        )

    async def _prime(self, doc: _Doc) -> None:
        await self.server.warmup.ready()
        try:
            assert doc.context is not None
            context = await asyncio.shield(doc.context)
            await prime_cache(self.server.env("complete"), doc.path, context)
        except (PolyfuseError, OSError) as exc:  # only a head start: the first request will say what is wrong
            _LOG.info("could not prime the cache for %s: %s", doc.path, exc)

    def changed(self, uri: str) -> int:
        doc = self.docs.get(uri)
        return doc.cancel() if doc is not None else 0

    def closed(self, uri: str) -> None:
        doc = self.docs.pop(uri, None)
        if doc is not None:
            doc.close()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Cancel every document's work and wait (bounded) until it stopped: a local model stops within one
        token once its caller is cancelled, and only then can the models be unloaded."""
        running = [t for doc in self.docs.values() for t in doc.close()]
        self.docs.clear()
        if running:
            await asyncio.wait(running, timeout=timeout)

    # -- requests --------------------------------------------------------------------------------------------
    async def complete(self, uri: str, path: Path, text: str, offset: int) -> Served:
        started = time.perf_counter()
        doc = self._doc(uri, path)
        me = asyncio.current_task()
        assert me is not None
        for older in doc.requests:
            older.cancel()  # a newer request for the document supersedes them
        doc.requests = {me}
        try:
            return await self._complete(doc, text, offset, started)
        finally:
            doc.requests.discard(me)

    async def _complete(self, doc: _Doc, text: str, offset: int, started: float) -> Served:
        env = self.server.env("complete")
        since = time.monotonic() - doc.last
        doc.last = time.monotonic()
        if since < env.settings.debounce:
            await asyncio.sleep(env.settings.debounce)
        await self.server.warmup.ready()
        key = (hash(text), offset)
        if doc.spot is not None and doc.spot.key == key:
            return self._again(doc.spot, env, started)
        doc.spot = None
        for other in self.docs.values():  # latency first: a fusion still refining some answer would make
            if other.spot is not None and other.spot.refined is not None:  # this one wait for the models
                other.spot.refined.cancel()
                other.spot.refined = None
        context = await self._context(doc, env)
        try:
            result = await complete_text(
                env, text, offset, doc.path, fast=True, context=context, wait_refined=False
            )
        except PolyfuseError as exc:
            return Served("", reason=f"{type(exc).__name__}: {exc}")
        served = self._served(result, env, started)
        if result.refined is not None:
            result.refined.add_done_callback(_retrieved)
        doc.spot = _Spot(key, served, result.refined)
        return served

    async def _context(self, doc: _Doc, env: CodeEnv) -> str:
        """The document's related files; "" when they are not gathered within the latency budget."""
        if doc.context is None:
            return ""
        try:
            budget = env.settings.latency_budget or None
            return await asyncio.wait_for(asyncio.shield(doc.context), budget)
        except TimeoutError:
            _LOG.info("related files of %s not ready within the latency budget: completing without", doc.path)
        except (PolyfuseError, OSError) as exc:
            _LOG.info("no related files for %s: %s", doc.path, exc)
        return ""

    def _again(self, spot: _Spot, env: CodeEnv, started: float) -> Served:
        """The same spot again: the fused answer if the fusion finished, else what was served before."""
        latency = time.perf_counter() - started
        task = spot.refined
        if task is None or not task.done():
            return spot.served.again(latency)
        spot.refined = None
        if (
            task.cancelled()
            or task.exception() is not None
            or task.result().insertion == spot.served.insertion
        ):
            return spot.served.again(latency)  # nothing new: the same suggestion, not a second one
        spot.served = self._served(task.result(), env, started, fused=True)
        return spot.served

    def _served(self, result: CompleteResult, env: CodeEnv, started: float, fused: bool = False) -> Served:
        latency = time.perf_counter() - started
        if not result.insertion.strip():
            budget = env.settings.latency_budget
            return Served(
                "",
                run_id=result.run_id,
                latency=latency,
                reason=f"no candidate passed its checks within the latency budget ({budget:g}s)",
            )
        single = self.server.pool_size == 1
        mode = "single" if single else ("fast" if result.fast and not fused else "fused")
        served = Served(
            result.insertion,
            mode,
            result.member,
            result.model,
            result.run_id,
            uuid.uuid4().hex,
            latency,
        )
        if self.server.recorder is not None:
            s = Suggestion(
                served.run_id, mode, served.model or "", served.member or "", latency, uid=served.suggestion
            )
            self.server.recorder.shown(s)
        return served
