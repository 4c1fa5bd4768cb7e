"""Editor latency: inline completion through ``polyfuse lsp`` (stdio) and ``POST /v1/completions`` through
``polyfuse serve``, side by side with llama-cpp-python completing the same prompt directly.

The file is a ~200-line Python file of this repository; 20 cursor positions are the starts of 20 statements
spread over its functions. At each position the statement is removed (the user is about to write it): the
editor asks there ("new spot"), then the user types its first character and the editor asks again
("keystroke"). The direct side is a llama-cpp-python ``Llama`` of the same GGUF with the same threads and
context, fed the same prompt tokens (rendered by polyfuse's own template code from the same task), the same
sampling, stops and ``max_tokens``, in the same order, after the same warm-up and cache priming: its KV cache
sees what the server's sees.

Phases (each measured side by side, alternating server request and direct run):

1. pool of one (SmolLM2) through the language server: each request against the direct time of its prompt;
2. the fused fast path (both bundled models, SmolLM2 judging) through the language server, against the direct
   time of the faster member (SmolLM2) on its own prompt; typing (didChange) cancels the fusion still refining
   an answer before the direct run, as it would in an editor;
3. the first request after ``initialize`` returns (sent at once, and sent once ``$/progress`` says the models
   are ready) against a warm request at the same position, on fresh servers;
4. the same through ``polyfuse serve``'s ``/v1/completions``: pool of one (``local/smollm2-135m``, pass-through),
   the fused preset (``polyfuse/local``) against the faster member, the first request after the server started
   (``[server] preload``) against a warm one.

Usage: .venv/bin/python bench/lsp_latency.py [--positions 20] [--restarts 3] [--max-tokens 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lsprotocol import types
from pygls.lsp.client import LanguageClient

from polyfuse.code.complete import prompt_window, related_context
from polyfuse.code.fim import FimTask, clean_completion
from polyfuse.code.task import CodeEnv
from polyfuse.config import LocalSettings, load_config
from polyfuse.providers.local import REPEAT_PENALTY, LocalRuntime, bundled_path
from polyfuse.providers.registry import ProviderHub
from polyfuse.types import Message

print = functools.partial(print, flush=True)  # noqa: A001 - progress shows while the benchmark runs
ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "src/polyfuse/code/edits.py"
STATEMENT = re.compile(r"^( {4,})(return |if |for |[a-z_][\w.]* = )")


# -- the file and its positions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spot:
    text: str  # the document
    line: int
    col: int

    @property
    def offset(self) -> int:
        lines = self.text.split("\n")
        return sum(len(ln) + 1 for ln in lines[: self.line]) + self.col


def spots(source: str, n: int) -> list[tuple[Spot, Spot]]:
    """(new spot, keystroke) pairs at ``n`` statement starts spread over the file."""
    lines = source.split("\n")
    in_doc, found = False, []
    for i, line in enumerate(lines):
        if line.count('"""') % 2:
            in_doc = not in_doc
        m = STATEMENT.match(line)
        if m and not in_doc:
            found.append((i, len(m.group(1))))
    picked = [found[round(k * (len(found) - 1) / max(1, n - 1))] for k in range(n)]
    pairs = []
    for i, indent in dict.fromkeys(picked):
        statement = lines[i][indent:]
        removed = "\n".join([*lines[:i], lines[i][:indent], *lines[i + 1 :]])
        typed = "\n".join([*lines[:i], lines[i][:indent] + statement[0], *lines[i + 1 :]])
        pairs.append((Spot(removed, i, indent), Spot(typed, i, indent + 1)))
    return pairs


# -- the direct side ------------------------------------------------------------------------------------------
class Direct:
    """llama-cpp-python called directly, on the chat prompt rendered by polyfuse's own template code."""

    def __init__(self, runtime: LocalRuntime, name: str, max_tokens: int) -> None:
        self.engine = runtime.engine(bundled_path(name))
        assert self.engine.template, "the direct side renders the chat prompt: a chat model"
        self.llm = self.engine.llm
        self.max_tokens = max_tokens

    def warm(self) -> None:  # what the language server does at initialize: one token from a one-word prompt
        self._run(*self.engine.chat_tokens([Message(role="user", content="-")]), max_tokens=1)

    def run(self, task: FimTask, max_tokens: int | None = None) -> tuple[float, str]:
        tokens, stops = self.engine.chat_tokens(task.chat_messages())
        started = time.perf_counter()
        text = self._run(tokens, stops, max_tokens or self.max_tokens)
        return time.perf_counter() - started, text

    def _run(self, tokens: list[int], stops: list[str], max_tokens: int) -> str:
        parts = []
        for chunk in self.llm.create_completion(
            prompt=tokens, max_tokens=max_tokens, temperature=0.0, top_p=0.95, repeat_penalty=REPEAT_PENALTY,
            stop=stops, stream=True,
        ):  # fmt: skip
            parts.append(chunk["choices"][0]["text"] or "")
        return "".join(parts)


def task_for(spot: Spot, context: str, path: str, before: int, after: int) -> FimTask:
    prefix, suffix = prompt_window(spot.text[: spot.offset], spot.text[spot.offset :], before, after)
    return FimTask(prefix, suffix, path, "python", context)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def idle(pid: int, quiet: float = 0.5, timeout: float = 900) -> None:
    """Wait until a server process has used no CPU for ``quiet`` seconds: its background work (cache priming at
    didOpen, a cancelled fusion winding down) must not share the CPU with what is measured next."""
    deadline = time.monotonic() + timeout
    last, since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() - since < quiet:
        await asyncio.sleep(0.1)
        now = cpu_seconds(pid)
        if now - last > 0.02:
            last, since = now, time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} never went idle")


# -- the language server side ---------------------------------------------------------------------------------
class Client(LanguageClient):
    def __init__(self) -> None:
        super().__init__("bench", "1")
        self.ready = asyncio.Event()
        self.pid = 0

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create(params: types.WorkDoneProgressCreateParams) -> None:
            return None

        @self.feature(types.PROGRESS)
        def progress(params: types.ProgressParams) -> None:
            value = params.value if isinstance(params.value, dict) else {}
            if value.get("kind") == "end":
                self.ready.set()

        @self.feature(types.WINDOW_LOG_MESSAGE)
        def log(params: types.LogMessageParams) -> None:
            return None


DATA = tempfile.mkdtemp(prefix="polyfuse-bench-")  # the servers' run log: not the user's
CHILD_ENV = {**os.environ, "XDG_DATA_HOME": DATA}


async def lsp_start(options: dict[str, Any], cwd: Path) -> Client:
    client = Client()
    await client.start_io(sys.executable, "-m", "polyfuse.cli.main", "lsp", cwd=str(cwd), env=CHILD_ENV)
    client.pid = client._server.pid  # type: ignore[union-attr]
    caps = types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=True))
    params = types.InitializeParams(capabilities=caps, root_uri=ROOT.as_uri(), initialization_options=options)
    await asyncio.wait_for(client.initialize_async(params), 120)
    client.initialized(types.InitializedParams())
    return client


async def lsp_stop(client: LanguageClient) -> None:
    await asyncio.wait_for(client.shutdown_async(None), 60)
    client.exit(None)
    await client.stop()


class Doc:
    def __init__(self, client: LanguageClient, text: str) -> None:
        self.client, self.uri, self.version = client, FILE.as_uri(), 1
        item = types.TextDocumentItem(uri=self.uri, language_id="python", version=1, text=text)
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))

    def set(self, text: str) -> None:
        self.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )

    async def complete(self, spot: Spot) -> tuple[float, str | None, str | None]:
        """(seconds, insertion or None, member) for an inline completion at the spot."""
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=self.uri),
            position=types.Position(line=spot.line, character=spot.col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
        started = time.perf_counter()
        res = await asyncio.wait_for(self.client.text_document_inline_completion_async(params), 600)
        took = time.perf_counter() - started
        if not res.items:
            return took, None, None
        member = res.items[0].command.arguments[0]["member"] if res.items[0].command else None
        return took, res.items[0].insert_text, member


# -- figures ----------------------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """Server and direct seconds, request by request."""

    server: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    same: int = 0  # the server's insertion equals the cleaned direct output (same prompt, same answer)
    answered: int = 0
    by: dict[str, int] = field(default_factory=dict)

    def add(self, server: float, direct: float) -> None:
        self.server.append(server)
        self.direct.append(direct)

    def row(self) -> dict[str, Any]:
        s, d = statistics.median(self.server), statistics.median(self.direct)
        return {
            "n": len(self.server),
            "server_median_ms": round(s * 1000, 1),
            "direct_median_ms": round(d * 1000, 1),
            "ratio": round(s / d, 3),
            "server_p90_ms": round(sorted(self.server)[int(0.9 * (len(self.server) - 1))] * 1000, 1),
            "answered": self.answered,
            "same_answer": self.same,
            "answered_by": self.by,
        }


def _note(pairs: Pairs, insertion: str | None, member: str | None, expected: str) -> None:
    if insertion is not None:
        pairs.answered += 1
        pairs.same += insertion == expected
        key = (member or "?").split("/")[-1]
        pairs.by[key] = pairs.by.get(key, 0) + 1


# -- phases -----------------------------------------------------------------------------------------------------
async def lsp_phase(
    options: dict[str, Any],
    pairs_of: list[tuple[Spot, Spot]],
    direct: Direct,
    context: str,
    env: CodeEnv,
    fused: bool,
) -> dict[str, Pairs]:
    """Requests through the language server alternating with direct runs of the faster member's prompt."""
    s = env.settings
    out = {"new spot": Pairs(), "keystroke": Pairs()}
    client = await lsp_start(options, ROOT)
    try:
        await asyncio.wait_for(client.ready.wait(), 300)
        direct.warm()
        direct.run(FimTask("", "", FILE.name, "python", context), max_tokens=1)  # the server's cache priming
        doc = Doc(client, FILE.read_text())
        await asyncio.sleep(0.5)
        await idle(client.pid)  # the server primes its cache at didOpen
        for n, (new, typed) in enumerate(pairs_of):
            print(f"  position {n + 1}/{len(pairs_of)}", end="\r")
            for kind, spot, after in (("new spot", new, typed.text), ("keystroke", typed, None)):
                doc.set(spot.text)
                took, insertion, member = await doc.complete(spot)
                if fused:  # typing cancels the fusion refining that answer, as the next keystroke would
                    doc.set(after or spot.text + " ")
                await idle(client.pid)
                task = task_for(spot, context, FILE.name, s.complete_prefix_lines, s.complete_suffix_lines)
                direct_s, text = direct.run(task)
                _note(out[kind], insertion, member, clean_completion(text, task, from_chat=True))
                out[kind].add(took, direct_s)
    finally:
        await lsp_stop(client)
    return out


async def first_request(
    options: dict[str, Any], pairs_of: list[tuple[Spot, Spot]], restarts: int
) -> dict[str, Any]:
    """The first request after initialize returns (at once; once the models are reported ready) against a warm
    request at the same position on the same server (after requests at two other positions)."""
    rows: dict[str, list[float]] = {"first, sent at once": [], "first, after $/progress end": [], "warm": []}
    target, others = pairs_of[0][0], [p[0] for p in pairs_of[1:3]]
    for _ in range(restarts):
        for wait_ready in (False, True):
            client = await lsp_start(options, ROOT)
            try:
                doc = Doc(client, target.text)
                if wait_ready:
                    await asyncio.wait_for(client.ready.wait(), 300)
                    await asyncio.sleep(0.5)
                    await idle(client.pid)  # and the didOpen priming
                took, _, _ = await doc.complete(target)
                rows["first, after $/progress end" if wait_ready else "first, sent at once"].append(took)
                if wait_ready:
                    for spot in others:
                        doc.set(spot.text)
                        await doc.complete(spot)
                    doc.set(target.text)
                    await idle(client.pid)
                    rows["warm"].append((await doc.complete(target))[0])
            finally:
                await lsp_stop(client)
    return {k: round(statistics.median(v) * 1000, 1) for k, v in rows.items()}


async def cancel_phase(runs: int) -> dict[str, float]:
    """How long from the editor's cancel (``$/cancelRequest``, or typing: ``didChange``) until the upstream sees
    each model call's connection close: two members on a loopback upstream that would take 30 s."""
    from polyfuse.testing.upstream import Behaviour, FakeUpstream

    out: dict[str, list[float]] = {"$/cancelRequest": [], "didChange": []}
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream({"slow": Behaviour(text="x", latency=30)}) as up:
        model = f"{up.base_url}#slow"
        options = {"pool": [model, model], "judge": model, "latency_budget": 0, "debounce": 0}
        client = await lsp_start(options, Path(tmp))
        try:
            path = Path(tmp) / "app.py"
            item = types.TextDocumentItem(uri=path.as_uri(), language_id="python", version=1, text="x = 1\n")
            client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))
            for i in range(runs):
                for how in out:
                    before = up.disconnects
                    params = types.InlineCompletionParams(
                        text_document=types.TextDocumentIdentifier(uri=path.as_uri()),
                        position=types.Position(line=0, character=5),
                        context=types.InlineCompletionContext(
                            trigger_kind=types.InlineCompletionTriggerKind.Invoked
                        ),
                    )
                    fut = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
                    while up.active < 2:
                        await asyncio.sleep(0.005)
                    started = time.perf_counter()
                    if how == "didChange":
                        change = types.TextDocumentContentChangeWholeDocument(text=f"x = {i}\n")
                        client.text_document_did_change(
                            types.DidChangeTextDocumentParams(
                                text_document=types.VersionedTextDocumentIdentifier(
                                    uri=path.as_uri(), version=i + 2
                                ),
                                content_changes=[change],
                            )
                        )
                    else:
                        msg_id = next(reversed(client.protocol._request_futures))
                        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
                    while up.disconnects < before + 2:
                        await asyncio.sleep(0.001)
                    out[how].append(time.perf_counter() - started)
                    await asyncio.gather(fut, return_exceptions=True)
        finally:
            await lsp_stop(client)
    return {k: round(statistics.median(v) * 1000, 1) for k, v in out.items()} | {
        f"{k} max": round(max(v) * 1000, 1) for k, v in out.items()
    }


# -- /v1/completions ------------------------------------------------------------------------------------------
class Serve:
    def __init__(self, tmp: Path, preload: list[str]) -> None:
        self.config = tmp / "polyfuse.toml"
        self.config.write_text(
            f"[server]\npreload = {json.dumps(preload)}\n\n[code]\nlatency_budget = 0\n\n[log]\nenabled = false\n"
        )
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.pid = 0

    def __enter__(self) -> Serve:
        argv = [
            sys.executable,
            "-m",
            "polyfuse.cli.main",
            "serve",
            "--port",
            "0",
            "--config",
            str(self.config),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        deadline = time.time() + 120
        while (
            not (m := re.search(r"serving on (http://\S+) ", self.log.read_text()))
            or "startup complete" not in self.log.read_text()
        ):
            assert time.time() < deadline and self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        self.url = m.group(1)
        self.pid = self.proc.pid
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def complete(self, model: str, spot: Spot, max_tokens: int) -> tuple[float, str, str | None]:
        body = {"model": model, "prompt": spot.text[: spot.offset], "suffix": spot.text[spot.offset :],
                "max_tokens": max_tokens}  # fmt: skip
        started = time.perf_counter()
        r = httpx.post(self.url + "/v1/completions", json=body, timeout=600)
        took = time.perf_counter() - started
        r.raise_for_status()
        data = r.json()
        info = data.get("polyfuse") or {}
        return took, data["choices"][0]["text"], info.get("member") or model


async def server_phase(
    model: str, pairs_of: list[tuple[Spot, Spot]], direct: Direct, env: CodeEnv, max_tokens: int, fused: bool
) -> tuple[dict[str, Pairs], dict[str, float]]:
    s = env.settings
    out = {"new spot": Pairs(), "keystroke": Pairs()}
    tasks = [
        (kind, spot, task_for(spot, "", "completion.py", s.complete_prefix_lines, s.complete_suffix_lines))
        for new, typed in pairs_of
        for kind, spot in (("new spot", new), ("keystroke", typed))
    ]
    first: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, Serve(Path(tmp), [model]) as srv:
        await idle(srv.pid)  # the preload, in the background at startup
        direct.warm()
        first["first after start"] = srv.complete(model, tasks[0][1], max_tokens)[0]
        direct.run(tasks[0][2])  # the server's cache now holds that prompt: the direct side's too
        if fused:  # a fusion refining in the background would share the CPU with the direct runs: measure
            times = [
                direct.run(t)[0] for _, _, t in tasks
            ]  # the direct side first, then the requests in a row
            for (kind, spot, _task), direct_s in zip(tasks, times, strict=True):
                took, text, member = srv.complete(model, spot, max_tokens)
                _note(out[kind], text or None, member, "")
                out[kind].add(took, direct_s)
        else:
            for kind, spot, task in tasks:
                took, text, member = srv.complete(model, spot, max_tokens)
                direct_s, raw = direct.run(task)
                _note(out[kind], text or None, member, clean_completion(raw, task, from_chat=True))
                out[kind].add(took, direct_s)
        srv.complete(model, tasks[2][1], max_tokens)
        srv.complete(model, tasks[4][1], max_tokens)
        first["warm, same request"] = srv.complete(model, tasks[0][1], max_tokens + 1)[
            0
        ]  # not the cached answer
    return out, first


# -- main ---------------------------------------------------------------------------------------------------------
def _print(title: str, rows: dict[str, Pairs]) -> None:
    print(f"\n{title}")
    print(
        f"  {'request':<10} {'n':>3} {'server ms':>10} {'direct ms':>10} {'ratio':>6} {'p90 ms':>8}  answered"
    )
    for kind, pairs in rows.items():
        r = pairs.row()
        print(
            f"  {kind:<10} {r['n']:>3} {r['server_median_ms']:>10.1f} {r['direct_median_ms']:>10.1f} "
            f"{r['ratio']:>6.3f} {r['server_p90_ms']:>8.1f}  {r['answered']} (same as direct: {r['same_answer']}; "
            f"by {r['answered_by']})"
        )


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", help="Also write the figures to this file.")
    args = parser.parse_args()
    source = FILE.read_text()
    pairs_of = spots(source, args.positions)
    threads = os.cpu_count() or 1
    runtime = LocalRuntime(LocalSettings(n_threads=threads))
    smol = Direct(runtime, "smollm2-135m", args.max_tokens)
    single = {"pool": ["local/smollm2-135m"], "judge": "local/smollm2-135m"}
    config = load_config(data={"code": {**single, "complete_max_tokens": args.max_tokens}})
    async with ProviderHub.from_config(config) as hub:
        env = CodeEnv.create(config, hub)
        context = related_context(env, FILE, ROOT, source[:20_000])  # what the server computes at didOpen
    base = {"complete_max_tokens": args.max_tokens, "latency_budget": 0}
    print(f"{FILE.relative_to(ROOT)} ({source.count(chr(10))} lines), {len(pairs_of)} positions, "
          f"{args.max_tokens} max tokens, {threads} threads, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    figures: dict[str, Any] = {}
    cancel = await cancel_phase(20)
    print(f"\nlanguage server, cancel -> the upstream sees both model calls closed (ms, 20 runs): {cancel}")
    one = await lsp_phase({**single, **base}, pairs_of, smol, context, env, fused=False)
    _print("language server, pool of one (SmolLM2) vs direct llama-cpp-python, same prompt", one)
    fused = await lsp_phase({"preset": "local", **base}, pairs_of, smol, context, env, fused=True)
    _print("language server, fused fast path (SmolLM2 + Gemma) vs the faster member (SmolLM2) direct", fused)
    first = await first_request({**single, **base}, pairs_of, args.restarts)
    print(
        f"\nlanguage server, first request after initialize vs warm (median of {args.restarts} restarts, ms): {first}"
    )
    s_one, s_first = await server_phase(
        "local/smollm2-135m", pairs_of, smol, env, args.max_tokens, fused=False
    )
    _print("/v1/completions, local/smollm2-135m vs direct, same prompt", s_one)
    s_fused, s_fused_first = await server_phase(
        "polyfuse/local", pairs_of, smol, env, args.max_tokens, fused=True
    )
    _print("/v1/completions, polyfuse/local (fused fast path) vs the faster member (SmolLM2) direct", s_fused)
    print(
        f"\n/v1/completions first request after start vs warm (ms): single {s_first}, fused {s_fused_first}"
    )
    runtime.close()
    figures = {
        "lsp_cancel": cancel,
        "lsp_single": {k: v.row() for k, v in one.items()},
        "lsp_fused": {k: v.row() for k, v in fused.items()},
        "lsp_first": first,
        "server_single": {k: v.row() for k, v in s_one.items()},
        "server_fused": {k: v.row() for k, v in s_fused.items()},
        "server_first": {"single": {k: round(v * 1000, 1) for k, v in s_first.items()},
                         "fused": {k: round(v * 1000, 1) for k, v in s_fused_first.items()}},
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    asyncio.run(main())
