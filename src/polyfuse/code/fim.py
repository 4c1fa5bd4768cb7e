"""Fill-in-the-middle prompts in each model's own format, and the clean-up of what comes back.

A registry of templates, chosen per model: raw FIM formats for models that accept a raw prompt
(StarCoder ``<fim_prefix>``, Qwen-coder ``<|fim_prefix|>``, CodeLlama ``<PRE>``, DeepSeek-coder, Codestral
suffix-first), plain prefix completion for other base models (the bundled Gemma), and a hole-filling chat
prompt for chat models. ``FimAdapter`` wraps a pool member's model for one completion so that the fusion engine
can send every member the same request while each model sees its own format.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..providers.base import ChatModel, Delta, StreamEvent
from ..types import Completion, GenerationParams, Message

__all__ = [
    "FimTask",
    "FimTemplate",
    "FIM_TEMPLATES",
    "register_template",
    "template_for",
    "FimAdapter",
    "clean_completion",
    "FimSplit",
    "split_fim",
    "HOLE",
]

HOLE = "<FILL_HERE>"


@dataclass(frozen=True)
class FimTask:
    prefix: str
    suffix: str
    path: str = "untitled"
    language: str = "python"
    context: str = ""  # related files, rendered

    def chat_messages(self) -> list[Message]:
        """The hole-filling chat prompt (also what the judge sees as the request).

        Laid out most-stable first, so that a local model's KV cache (the evaluated prompt, reused up to the
        first token that differs) survives typing: instructions, related files, the code after the cursor
        (typing at the cursor does not change it), then the code before the cursor, which ends at the hole."""
        related = f"Related files:\n{self.context}\n\n" if self.context else ""
        lang = self.language
        user = (
            f"Fill in the code at {HOLE} in {self.path} ({lang}). Reply with only the code that replaces "
            f"{HOLE}, in one fenced code block, without repeating the code around it.\n\n{related}"
            f"The code after {HOLE}:\n```{lang}\n{HOLE}{self.suffix}\n```\n\n"
            f"The code before {HOLE}, which it continues:\n```{lang}\n{self.prefix}{HOLE}\n```"
        )
        return [
            Message(role="system", content="You are a code completion engine. You write only code."),
            Message(role="user", content=user),
        ]


@dataclass(frozen=True)
class FimTemplate:
    name: str
    render: Callable[[FimTask], str] | None  # raw prompt; None for the chat template
    stops: tuple[str, ...] = ()
    matches: Callable[[str], bool] = lambda model_id: False

    @property
    def raw(self) -> bool:
        return self.render is not None


def _with_context(task: FimTask) -> str:
    if not task.context:
        return task.prefix
    marker = "#" if task.language in ("python", "ruby", "shell", "bash") else "//"
    header = "\n".join(f"{marker} {line}" for line in task.context.splitlines()[:200])
    return f"{header}\n\n{task.prefix}"


FIM_TEMPLATES: dict[str, FimTemplate] = {}


def register_template(template: FimTemplate) -> FimTemplate:
    FIM_TEMPLATES[template.name] = template
    return template


# Order matters: the first template whose ``matches`` accepts a model id wins.
register_template(
    FimTemplate(
        "qwen",
        lambda t: f"<|fim_prefix|>{_with_context(t)}<|fim_suffix|>{t.suffix}<|fim_middle|>",
        ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|fim_prefix|>", "<|im_end|>"),
        lambda m: "qwen" in m and "coder" in m,
    )
)
register_template(
    FimTemplate(
        "starcoder",
        lambda t: f"<fim_prefix>{_with_context(t)}<fim_suffix>{t.suffix}<fim_middle>",
        ("<|endoftext|>", "<file_sep>", "<fim_prefix>"),
        lambda m: "starcoder" in m or "santacoder" in m,
    )
)
register_template(
    FimTemplate(
        "codellama",
        lambda t: f"<PRE> {_with_context(t)} <SUF>{t.suffix} <MID>",
        ("<EOT>", "</s>"),
        lambda m: "codellama" in m or "code-llama" in m,
    )
)
register_template(
    FimTemplate(
        "deepseek",
        lambda t: f"<｜fim▁begin｜>{_with_context(t)}<｜fim▁hole｜>{t.suffix}<｜fim▁end｜>",
        ("<｜end▁of▁sentence｜>", "<|EOT|>"),
        lambda m: "deepseek" in m and "coder" in m,
    )
)
register_template(
    FimTemplate(
        "codestral",
        lambda t: f"[SUFFIX]{t.suffix}[PREFIX]{_with_context(t)}",
        ("</s>", "[SUFFIX]", "[PREFIX]"),
        lambda m: "codestral" in m,
    )
)
register_template(FimTemplate("prefix", _with_context, ("\n\n\n\n",)))
register_template(FimTemplate("chat", None))


def template_for(model: ChatModel, overrides: Mapping[str, str] | None = None) -> FimTemplate:
    """The template for a model: an explicit override (model id -> template name), else a raw FIM format
    recognised from the id when the model accepts raw prompts, else prefix completion for base models, else chat."""
    name = (overrides or {}).get(model.id)
    if name is not None:
        if name not in FIM_TEMPLATES:
            raise ConfigError(f"unknown FIM template '{name}'; known: {', '.join(FIM_TEMPLATES)}")
        template = FIM_TEMPLATES[name]
        if template.raw and not model.supports_text_completion:
            raise ConfigError(f"model {model.id} takes no raw prompt, so FIM template '{name}' cannot apply")
        return template
    if model.supports_text_completion:
        lowered = model.id.lower()
        for template in FIM_TEMPLATES.values():
            if template.matches(lowered):
                return template
        if model.kind == "base":
            return FIM_TEMPLATES["prefix"]
    return FIM_TEMPLATES["chat"]


@dataclass(frozen=True)
class FimSplit:
    """A prompt a client rendered in a fill-in-the-middle format itself, taken apart again."""

    prefix: str
    suffix: str
    context: str  # what came before the prefix marker (a client's repository snippets), tokens removed
    template: str


# Prefix-suffix-middle formats, as clients render them: (template, prefix marker, suffix marker, middle marker).
_PSM = (
    ("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    ("codellama", "<PRE>", "<SUF>", "<MID>"),
)
_CONTEXT_TOKENS = re.compile(r"<\|?(?:file_sep|repo_name|endoftext)\|?>")


def split_fim(prompt: str) -> FimSplit | None:
    """Prefix and suffix of a prompt already rendered in a FIM format (Continue, for instance, renders
    ``<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>`` itself for OpenAI-compatible servers); None for
    a plain prompt."""
    body = prompt.rstrip()
    for name, pre, suf, mid in _PSM:
        start = body.find(pre)
        if start < 0 or not body.endswith(mid):
            continue
        hole = body.find(suf, start + len(pre))
        end = len(body) - len(mid)
        if hole < 0 or hole > end:
            continue
        prefix, suffix = body[start + len(pre) : hole], body[hole + len(suf) : end]
        if name == "codellama":  # its template puts a space after <PRE> and before <MID>
            prefix, suffix = prefix.removeprefix(" "), suffix.removesuffix(" ")
        context = _CONTEXT_TOKENS.sub("\n", body[:start]).strip("\n")
        return FimSplit(prefix, suffix, context, name)
    if prompt.startswith("[SUFFIX]") and "[PREFIX]" in prompt:  # Codestral: suffix first
        suffix, _, prefix = prompt[len("[SUFFIX]") :].partition("[PREFIX]")
        return FimSplit(prefix, suffix, "", "codestral")
    return None


_FENCED = re.compile(r"```[\w+-]*\n(.*?)(?:```|$)", re.S)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def clean_completion(text: str, task: FimTask, from_chat: bool) -> str:
    """What to insert at the cursor: the code out of a chat answer's fence, without a repeat of the current
    line or of the code after the cursor, stopped where the model wanders out of the cursor's block."""
    if from_chat:
        fenced = _FENCED.search(text)
        text = fenced.group(1) if fenced else text
        text = text.replace(HOLE, "")
        line_start = task.prefix.rsplit("\n", 1)[-1]
        if line_start.strip() and text.lstrip().startswith(line_start.strip()):
            text = text.lstrip()[len(line_start.strip()) :]
        if task.prefix.strip() and text.startswith(task.prefix):
            text = text[len(task.prefix) :]
        text = _drop_restated(text, task.prefix).rstrip("\n")
    text = _cut_at_suffix(text, task.suffix)
    return _cut_at_dedent(_after_indent(text, task.prefix), task.prefix)


def _after_indent(text: str, prefix: str) -> str:
    """The cursor sits after a line's indentation: the first line must not bring its own (models write whole
    lines, so ``    return x`` typed at column 5 would be indented twice)."""
    current = prefix.rsplit("\n", 1)[-1]
    if current and not current.strip():
        first, nl, rest = text.partition("\n")
        return first.lstrip(" \t") + nl + rest
    return text


_DOCSTRING = re.compile(r'^\s*[rbu]?("""|\'\'\')[\s\S]*?\1[ \t]*\n', re.I)


_DEF_NAME = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)")


def _drop_restated(text: str, prefix: str) -> str:
    """Chat models often restate the function being completed (signature, docstring), sometimes with other
    parameter names: keep only the body after the last restated ``def``/``class`` of a name the prefix has."""
    known = {m.group(1) for ln in prefix.splitlines() if (m := _DEF_NAME.match(ln))}
    lines = text.splitlines(keepends=True)
    last = max(
        (i for i, ln in enumerate(lines) if (m := _DEF_NAME.match(ln)) and m.group(1) in known), default=None
    )
    if last is None:
        return text
    body = "".join(lines[last + 1 :])
    return _DOCSTRING.sub("", body, count=1)


def _cut_at_suffix(text: str, suffix: str) -> str:
    first = next((ln.strip() for ln in suffix.splitlines() if ln.strip()), "")
    if not first or len(first) < 3:
        return text
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if i > 0 and line.strip() == first:
            return "".join(lines[:i]).rstrip("\n") + ("\n" if suffix.startswith("\n") else "")
    return text


def _cut_at_dedent(text: str, prefix: str) -> str:
    """Inside an indented block, a line back at column 0 starts code that is not ours (the next function)."""
    previous = [ln for ln in prefix.splitlines() if ln.strip()]
    if not previous or (_indent_of(previous[-1]) == 0 and not previous[-1].rstrip().endswith(":")):
        return text
    current = prefix.rsplit("\n", 1)[-1]
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.strip() or (i == 0 and current.strip()):
            continue  # blank, or the rest of a line already begun
        indent = _indent_of(line) + (len(current) if i == 0 else 0)
        if indent == 0:
            return "".join(lines[:i]).rstrip("\n")
    return text


class FimAdapter(ChatModel):
    """A pool member's model, prompted for one fill-in-the-middle task in its own format.

    The exact text to insert (leading indentation and newlines matter) goes to ``outputs[member]``: candidate
    texts are stripped by the engine, which is right for prose and wrong for an insertion."""

    def __init__(
        self, inner: ChatModel, template: FimTemplate, task: FimTask, member: str, outputs: dict[str, str]
    ) -> None:
        self.inner = inner
        self.template = template
        self.task = task
        self.member = member
        self.outputs = outputs
        self.id = inner.id
        self.kind = inner.kind

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[StreamEvent]:
        return self._stream(params)

    async def _stream(self, params: GenerationParams) -> AsyncIterator[StreamEvent]:
        if self.template.render is not None:
            stops = [*(params.stop or []), *self.template.stops]
            events = self.inner.stream_text(self.template.render(self.task), params.merged(stop=stops))
        else:
            events = self.inner.stream(self.task.chat_messages(), params)
        async for event in events:
            if isinstance(event, Delta):
                yield event
            elif isinstance(event, Completion):
                text = clean_completion(event.text, self.task, from_chat=not self.template.raw)
                self.outputs[self.member] = text
                yield event.model_copy(update={"text": text})
