"""Model-id resolution: prefixes -> providers, one hub owning every client and loaded model.

Model ids: ``<prefix>/<model>`` (``openrouter/anthropic/claude-sonnet-4.5``, ``openai/gpt-4o``,
``local/smollm2-135m``), ``local:/path/to/model.gguf``, or ``http(s)://host:port/v1#model-name`` for any
OpenAI-compatible server. Built-in providers register through ``register`` exactly as a plugin would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import ConfigError, MissingKeyError, UnknownModelError
from .base import ChatModel
from .openai_compat import OpenAICompatModel, StructuredMode, Upstream
from .pricing import PriceTable

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["ProviderHub", "HostedPreset", "HOSTED_PRESETS", "ModelFactory"]

ModelFactory = Callable[[str, "ProviderHub"], ChatModel]


@dataclass(frozen=True)
class HostedPreset:
    base_url: str
    api_key_env: str | None
    structured: StructuredMode = "json_schema"
    extra_body: tuple[tuple[str, object], ...] = ()
    text_completion: bool = False  # serves /completions with raw prompts


HOSTED_PRESETS: dict[str, HostedPreset] = {
    # OpenRouter reports usage.cost only when usage accounting is asked for.
    "openrouter": HostedPreset(
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
        extra_body=(("usage", {"include": True}),),
        text_completion=True,
    ),
    "openai": HostedPreset("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "gemini": HostedPreset("https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"),
    "anthropic": HostedPreset("https://api.anthropic.com/v1", "ANTHROPIC_API_KEY", structured="none"),
    "groq": HostedPreset("https://api.groq.com/openai/v1", "GROQ_API_KEY", structured="json_object"),
    "together": HostedPreset("https://api.together.xyz/v1", "TOGETHER_API_KEY", text_completion=True),
    "deepseek": HostedPreset("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", structured="json_object"),
    "ollama": HostedPreset("http://localhost:11434/v1", None, text_completion=True),
}


class ProviderHub:
    """Resolves model ids to models; owns the long-lived HTTP clients and loaded local models.

    Use one hub per process (or per server), and close it: ``async with ProviderHub(config) as hub: ...``.
    """

    def __init__(
        self,
        config: Config | None = None,
        env: Mapping[str, str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``headers`` go on every upstream call of this hub (e.g. the MCP server's hop count)."""
        from ..config import Config  # local import: config imports fusion, which imports providers

        self.config = config or Config()
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.headers = dict(headers or {})
        self.prices = PriceTable({k: (p.input, p.output) for k, p in self.config.prices.items()})
        self._factories: dict[str, ModelFactory] = {}
        self._models: dict[str, ChatModel] = {}
        self._upstreams: dict[tuple[str, str | None], Upstream] = {}
        self._local_runtime: object | None = None
        for prefix in HOSTED_PRESETS:
            self.register(prefix, _hosted_factory(prefix))
        for prefix in self.config.providers:
            if prefix not in self._factories:
                self.register(prefix, _hosted_factory(prefix))
        self.register("local", _local_factory)

    # -- registry ---------------------------------------------------------------------------------------------
    def register(self, prefix: str, factory: ModelFactory) -> None:
        """Make ``<prefix>/<name>`` resolve through ``factory(name, hub)``; replaces an existing prefix."""
        self._factories[prefix] = factory

    def prefixes(self) -> list[str]:
        return sorted(self._factories)

    def model(self, model_id: str) -> ChatModel:
        """The model for an id, created once and cached."""
        model_id = model_id.strip()
        if model_id in self._models:
            return self._models[model_id]
        model = self._create(model_id)
        self._models[model_id] = model
        return model

    def _create(self, model_id: str) -> ChatModel:
        if model_id.startswith(("http://", "https://")):
            base, sep, name = model_id.partition("#")
            if not sep or not name:
                raise UnknownModelError(
                    f"model '{model_id}': a base URL needs a model name after '#', e.g. http://127.0.0.1:8080/v1#qwen"
                )
            upstream = self._upstream(base, base, api_key=None, structured="json_schema")
            return OpenAICompatModel(model_id, name, upstream, self.prices)
        if model_id.startswith("local:"):
            return _local_factory(model_id, self)
        prefix, sep, name = model_id.partition("/")
        if not sep or not name:
            raise UnknownModelError(
                f"model '{model_id}' has no provider prefix; valid prefixes: {', '.join(self.prefixes())}, "
                "local:/path.gguf, http(s)://host/v1#model"
            )
        factory = self._factories.get(prefix)
        if factory is None:
            raise UnknownModelError(
                f"unknown provider prefix '{prefix}' in '{model_id}'; valid prefixes: {', '.join(self.prefixes())}, "
                "local:/path.gguf, http(s)://host/v1#model"
            )
        return factory(name, self)

    # -- hosted upstreams ---------------------------------------------------------------------------------------
    def key_for(self, prefix: str) -> tuple[str | None, str | None]:
        """(api key or None, env var consulted) for a hosted prefix."""
        settings = self.config.providers.get(prefix)
        preset = HOSTED_PRESETS.get(prefix)
        env_var = (settings.api_key_env if settings else None) or (preset.api_key_env if preset else None)
        if settings and settings.api_key:
            return settings.api_key, env_var
        if env_var and self.env.get(env_var):
            return self.env[env_var], env_var
        return None, env_var

    def missing_keys(self) -> dict[str, str]:
        """Hosted prefixes whose key is missing, with the environment variable to set."""
        out = {}
        for prefix in sorted(set(HOSTED_PRESETS) | set(self.config.providers)):
            key, env_var = self.key_for(prefix)
            if key is None and env_var:
                out[prefix] = env_var
        return out

    def _upstream(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        structured: StructuredMode,
        text_completion: bool = True,
    ) -> Upstream:
        cache_key = (base_url, api_key)
        if cache_key not in self._upstreams:
            settings = self.config.providers.get(name)
            self._upstreams[cache_key] = Upstream(
                name=name,
                base_url=base_url,
                api_key=api_key,
                headers={**(settings.headers if settings else {}), **self.headers},
                connect_timeout=settings.connect_timeout if settings else 10.0,
                read_timeout=settings.read_timeout if settings else 300.0,
                max_retries=settings.max_retries if settings else 2,
                structured=(
                    settings.structured_output if settings and settings.structured_output else structured
                ),
                text_completion=(
                    settings.text_completion
                    if settings and settings.text_completion is not None
                    else text_completion
                ),
            )
        return self._upstreams[cache_key]

    def hosted_upstream(self, prefix: str) -> Upstream:
        preset = HOSTED_PRESETS.get(prefix)
        settings = self.config.providers.get(prefix)
        base_url = (settings.base_url if settings else None) or (preset.base_url if preset else None)
        if not base_url:
            raise ConfigError(f"provider '{prefix}' has no base_url: set [providers.{prefix}] base_url")
        key, env_var = self.key_for(prefix)
        if key is None and env_var:
            raise MissingKeyError(prefix, env_var)
        upstream = self._upstream(
            prefix,
            base_url,
            key,
            preset.structured if preset else "json_schema",
            preset.text_completion if preset else True,  # a self-hosted server of one's own: yes
        )
        if preset and not upstream.extra_body:
            upstream.extra_body = dict(preset.extra_body)
        return upstream

    # -- local ------------------------------------------------------------------------------------------------
    @property
    def local_runtime(self):  # type: ignore[no-untyped-def]
        from .local import LocalRuntime

        if self._local_runtime is None:
            self._local_runtime = LocalRuntime(self.config.local)
        return self._local_runtime

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        for model in self._models.values():
            await model.aclose()
        for upstream in self._upstreams.values():
            await upstream.aclose()
        self._models.clear()
        self._upstreams.clear()
        if self._local_runtime is not None:
            self._local_runtime.close()  # type: ignore[attr-defined]
            self._local_runtime = None

    async def __aenter__(self) -> ProviderHub:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _hosted_factory(prefix: str) -> ModelFactory:
    def create(name: str, hub: ProviderHub) -> ChatModel:
        return OpenAICompatModel(f"{prefix}/{name}", name, hub.hosted_upstream(prefix), hub.prices)

    return create


def _local_factory(name: str, hub: ProviderHub) -> ChatModel:
    return hub.local_runtime.model(name)  # type: ignore[no-any-return]
