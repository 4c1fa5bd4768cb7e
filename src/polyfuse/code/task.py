"""What every code task shares: settings, the pool, redaction for remote models, and one fusion run.

Code candidates are fused best-of (or vote): the answer must be one candidate verbatim, the one whose checks
passed. ``CodeEnv.fuse`` is the single place a code task calls the engine; it records every run in the run log.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError, InvalidRequestError, NoSurvivorsError, PolyfuseError
from ..fusion.engine import Adapt, fuse
from ..fusion.events import EventSink, FusionEvent
from ..fusion.request import FusionRequest
from ..providers.base import ChatModel, MemberSpec, StreamEvent
from ..providers.registry import ProviderHub
from ..store import RunLog
from ..types import Candidate, FusionResult, GenerationParams, Message
from .checks import CheckSuite
from .redact import Redactor, is_remote_model
from .sandbox import SandboxLimits
from .settings import CodeSettings

__all__ = [
    "CodeEnv",
    "TaskResult",
    "CODE_MODES",
    "RawAdapter",
    "check_range",
    "extract_code",
    "language_of",
    "raw_for_base",
]

CODE_MODES = ("best-of", "vote")


@dataclass
class TaskResult:
    """A code task's outcome: the fusion result (candidates with their checks, verdict, timings) plus what the
    task made of it."""

    fusion: FusionResult
    redactions: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> str | None:
        return self.fusion.verdict.choice


@dataclass
class CodeEnv:
    """One code task's surroundings: config, hub, settings, and where its events go."""

    config: Config
    hub: ProviderHub
    settings: CodeSettings
    mode: str = "best-of"
    on_event: EventSink | None = None
    redactor: Redactor = field(default_factory=Redactor)
    run_log: RunLog | None = None  # every fusion run of the task is recorded here (source "code")
    task: str = "code"  # which task, for the run log

    @classmethod
    def create(
        cls,
        config: Config,
        hub: ProviderHub,
        *,
        mode: str | None = None,
        on_event: EventSink | None = None,
        run_log: RunLog | None = None,
        task: str = "code",
        **overrides: Any,
    ) -> CodeEnv:
        mode = mode or "best-of"
        if mode not in CODE_MODES:
            raise ConfigError(f"code tasks fuse with {' or '.join(CODE_MODES)} (got '{mode}')")
        return cls(config, hub, config.code.merged(**overrides), mode, on_event, run_log=run_log, task=task)

    def request(self, messages: Sequence[Message], **overrides: Any) -> FusionRequest:
        s = self.settings
        return self.config.build_request(
            list(messages),
            preset=s.preset,
            pool=s.pool,
            judge=s.judge,
            mode=self.mode,  # best-of ranks the checks' survivors (one survivor wins without a judge)
            temperature=s.temperature,
            **overrides,
        )

    def sandbox_limits(self) -> SandboxLimits:
        """How candidates of this task run: its timeout, and whether the weak sandbox is allowed."""
        s = self.settings
        return SandboxLimits(timeout=s.sandbox_timeout, allow_weak=s.allow_weak_sandbox)

    def model_ids(self) -> list[str]:
        probe = self.request([Message(role="user", content="probe")])
        return [m.model for m in probe.pool] + ([probe.judge] if probe.judge else [])

    @property
    def redacting(self) -> bool:
        policy = self.settings.redact
        if policy == "never":
            return False
        return policy == "always" or any(is_remote_model(m) for m in self.model_ids())

    def prepare(self, text: str, source: str) -> str:
        """A piece of the prompt (a file, a diff, a traceback), redacted when it may leave the machine."""
        return self.redactor.redact(text, source) if self.redacting else text

    async def fuse(
        self,
        messages: Sequence[Message],
        *,
        screen: CheckSuite | None = None,
        adapt: Adapt | None = None,
        max_tokens: int | None = None,
        json_schema: dict[str, Any] | None = None,
        stop: list[str] | None = None,
        watch: EventSink | None = None,
    ) -> FusionResult:
        """One fusion run; ``watch`` sees the events too (the fast path uses it)."""
        if self.redacting:  # a safety net over the pieces already prepared
            messages = self.redactor.redact_messages(messages)
        request = self.request(messages, max_tokens=max_tokens or self.settings.max_tokens, stop=stop)
        if json_schema is not None:
            request.params = request.params.merged(json_schema=json_schema)
        try:
            result = await fuse(request, self.hub, on_event=self._sink(watch), screen=screen, adapt=adapt)
        except NoSurvivorsError as exc:
            exc.scores = screen.scores if screen else {}  # type: ignore[attr-defined]
            await self._log_error(request, exc, exc.candidates)
            raise
        except PolyfuseError as exc:
            await self._log_error(request, exc, None)
            raise
        if self.run_log is not None:
            await self.run_log.arecord(request, result, source="code", meta={"task": self.task})
        return result

    async def _log_error(
        self, request: FusionRequest, exc: BaseException, candidates: list[Candidate] | None
    ) -> None:
        if self.run_log is not None:
            await asyncio.to_thread(
                self.run_log.record_error,
                request,
                exc,
                source="code",
                candidates=candidates,
                meta={"task": self.task},
            )

    def _sink(self, watch: EventSink | None) -> EventSink | None:
        sinks = [s for s in (self.on_event, watch) if s is not None]
        if len(sinks) < 2:
            return sinks[0] if sinks else None

        def both(event: FusionEvent) -> None:
            for sink in sinks:
                sink(event)

        return both


def check_range(text: str, start: int, end: int, path: Path) -> None:
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if start < 1 or end < start or end > max(lines, 1):
        raise InvalidRequestError(f"range {start}:{end} is outside {path} (lines 1-{max(lines, 1)})")


def language_of(path: Path) -> str:
    return {
        ".py": "python",
        ".pyi": "python",
        ".js": "javascript",
        ".ts": "typescript",
        ".tsx": "typescript",
        ".go": "go",
        ".rs": "rust",
        ".java": "java",
        ".rb": "ruby",
        ".c": "c",
        ".cpp": "cpp",
        ".sh": "bash",
    }.get(path.suffix, path.suffix.lstrip(".") or "text")


_FENCE = re.compile(r"```[\w+#.-]*[ \t]*\n(.*?)(?:\n```|$)", re.S)


def extract_code(text: str) -> str:
    """The code in a model's answer: the longest fenced block, else the whole answer."""
    blocks = _FENCE.findall(text)
    code = max(blocks, key=len) if blocks else text
    return code.strip("\n") + "\n"


class RawAdapter(ChatModel):
    """A base model given a raw prompt to continue (a chat transcript would make it chat, badly)."""

    def __init__(self, inner: ChatModel, prompt: str, stops: Sequence[str]) -> None:
        self.inner, self.prompt, self.stops = inner, prompt, list(stops)
        self.id, self.kind = inner.id, inner.kind

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[StreamEvent]:
        return self.inner.stream_text(self.prompt, params.merged(stop=[*(params.stop or []), *self.stops]))


def raw_for_base(prompt: str, stops: Sequence[str]) -> Adapt:
    """An adapt hook: base models that take raw prompts continue ``prompt``; chat models keep the chat."""

    def adapt(spec: MemberSpec, model: ChatModel) -> ChatModel:
        if model.kind == "base" and model.supports_text_completion:
            return RawAdapter(model, prompt, stops)
        return model

    return adapt
