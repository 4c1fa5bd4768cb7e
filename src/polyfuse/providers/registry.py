"""Model-id resolution: prefixes -> providers, one hub owning every client and loaded model.

Model ids: ``<prefix>/<model>`` (``openrouter/anthropic/claude-sonnet-4.5``, ``openai/gpt-4o``,
``local/smollm2-135m``), ``local:/path/to/model.gguf``, or ``http(s)://host:port/v1#model-name`` for any
OpenAI-compatible server. Built-in providers register through ``register`` exactly as a plugin would. The hub is
built from plain settings (providers, prices, local models) and a ``ModelPolicy`` that every id passes before
anything is created; ``ProviderHub.from_config(config)`` is the short way. Its caches are bounded: the least
recently used upstream beyond ``max_upstreams`` is closed once no call is using it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from ..errors import ConfigError, MissingKeyError, UnknownModelError
from ..settings import LocalSettings, Price, ProviderSettings
from .base import ChatModel
from .openai_compat import OpenAICompatModel
from .policy import ModelPolicy, is_url
from .pricing import PriceTable
from .retry import RetryPolicy
from .upstream import StructuredMode, Upstream

if TYPE_CHECKING:
    from .local import LocalRuntime

__all__ = ["ProviderHub", "HostedPreset", "HOSTED_PRESETS", "ModelFactory", "ModelSettings"]

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


class ModelSettings(Protocol):
    """The part of a ``Config`` a hub is built from (``ProviderHub.from_config``)."""

    @property
    def providers(self) -> Mapping[str, ProviderSettings]: ...
    @property
    def prices(self) -> Mapping[str, Price]: ...
    @property
    def local(self) -> LocalSettings: ...


class ProviderHub:
    """Resolves model ids to models; owns the long-lived HTTP clients and loaded local models.

    Use one hub per process (or per server), and close it: ``async with ProviderHub.from_config(config) as hub``.
    ``policy`` decides which ids may be resolved (default: every id, for the operator's own use).
    """

    def __init__(
        self,
        providers: Mapping[str, ProviderSettings] | None = None,
        *,
        prices: Mapping[str, Price] | None = None,
        local: LocalSettings | None = None,
        policy: ModelPolicy | None = None,
        env: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_upstreams: int = 64,
        max_models: int = 1024,
    ) -> None:
        """``headers`` go on every upstream call of this hub (e.g. an MCP server's hop count)."""
        self.providers: Mapping[str, ProviderSettings] = dict(providers or {})
        self.headers = dict(headers or {})
        self.local = local or LocalSettings()
        self.policy = policy or ModelPolicy.permissive()
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.prices = PriceTable({k: (p.input, p.output) for k, p in (prices or {}).items()})
        self.max_upstreams = max_upstreams
        self.max_models = max_models
        self._factories: dict[str, ModelFactory] = {}
        self._models: OrderedDict[str, ChatModel] = OrderedDict()
        self._upstreams: OrderedDict[tuple[str, str | None], Upstream] = OrderedDict()
        self._retiring: list[Upstream] = []
        self._local_runtime: LocalRuntime | None = None
        for prefix in HOSTED_PRESETS:
            self.register(prefix, _hosted_factory(prefix))
        for prefix in self.providers:
            if prefix not in self._factories:
                self.register(prefix, _hosted_factory(prefix))
        self.register("local", _local_factory)

    @classmethod
    def from_config(
        cls,
        config: ModelSettings,
        *,
        policy: ModelPolicy | None = None,
        env: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderHub:
        """A hub from a ``Config``'s provider, price and local tables."""
        return cls(
            config.providers,
            prices=config.prices,
            local=config.local,
            policy=policy,
            env=env,
            headers=headers,
        )

    # -- registry ---------------------------------------------------------------------------------------------
    def register(self, prefix: str, factory: ModelFactory) -> None:
        """Make ``<prefix>/<name>`` resolve through ``factory(name, hub)``; replaces an existing prefix."""
        self._factories[prefix] = factory

    def prefixes(self) -> list[str]:
        return sorted(self._factories)

    def model(self, model_id: str) -> ChatModel:
        """The model for an id, created once and cached (the least recently used beyond ``max_models`` is
        forgotten). The policy is asked first: a refused id creates, fetches and opens nothing."""
        model_id = model_id.strip()
        cached = self._models.get(model_id)
        if cached is not None:
            self._models.move_to_end(model_id)
            return cached
        model = self._create(model_id)
        self._models[model_id] = model
        if len(self._models) > self.max_models:
            self._models.popitem(last=False)
        return model

    def check(self, model_id: str) -> None:
        """Raise ``UnknownModelError`` or ``ModelNotAllowedError`` unless this hub would resolve the id."""
        model_id = model_id.strip()
        if is_url(model_id) or model_id.startswith("local:"):
            self.policy.check(model_id)
            return
        prefix, sep, name = model_id.partition("/")
        shown = model_id[:120]
        if not sep or not name:
            raise UnknownModelError(
                f"model '{shown}' has no provider prefix; valid prefixes: {', '.join(self.prefixes())}, "
                "local:/path.gguf, http(s)://host/v1#model"
            )
        if prefix not in self._factories:
            raise UnknownModelError(
                f"unknown provider prefix '{prefix[:40]}' in '{shown}'; valid prefixes: "
                f"{', '.join(self.prefixes())}, local:/path.gguf, http(s)://host/v1#model"
            )
        self.policy.check(model_id)

    def _create(self, model_id: str) -> ChatModel:
        self.check(model_id)
        if is_url(model_id):
            base, sep, name = model_id.partition("#")
            if not sep or not name:
                raise UnknownModelError(
                    f"model '{model_id[:120]}': a base URL needs a model name after '#', "
                    "e.g. http://127.0.0.1:8080/v1#qwen"
                )
            upstream = self._upstream(base, base, api_key=None, structured="json_schema")
            return OpenAICompatModel(model_id, name, upstream, self.prices)
        if model_id.startswith("local:"):
            return self.local_runtime.model_at(model_id)
        prefix, _, name = model_id.partition("/")
        return self._factories[prefix](name, self)

    # -- hosted upstreams ---------------------------------------------------------------------------------------
    def key_for(self, prefix: str) -> tuple[str | None, str | None]:
        """(api key or None, env var consulted) for a hosted prefix."""
        settings = self.providers.get(prefix)
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
        for prefix in sorted(set(HOSTED_PRESETS) | set(self.providers)):
            key, env_var = self.key_for(prefix)
            if key is None and env_var:
                out[prefix] = env_var
        return out

    def configured_prefixes(self) -> set[str]:
        """Hosted prefixes the operator set up: a ``[providers.X]`` table or a key in the environment."""
        return {p for p in HOSTED_PRESETS if self.key_for(p)[0] is not None} | set(self.providers)

    def _upstream(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        structured: StructuredMode,
        text_completion: bool = True,
    ) -> Upstream:
        cache_key = (base_url, api_key)
        upstream = self._upstreams.get(cache_key)
        if upstream is not None:
            self._upstreams.move_to_end(cache_key)
            return upstream
        upstream = _make_upstream(
            name, base_url, api_key, self.providers.get(name), structured, text_completion
        )
        upstream.headers.update(self.headers)
        self._upstreams[cache_key] = upstream
        if len(self._upstreams) > self.max_upstreams:
            _, evicted = self._upstreams.popitem(last=False)
            self._evict(evicted)
        return upstream

    def _evict(self, upstream: Upstream) -> None:
        """Forget the models on an evicted upstream and close its session once no call is using it."""
        for key in [k for k, m in self._models.items() if getattr(m, "upstream", None) is upstream]:
            del self._models[key]
        upstream.retire()
        self._retiring = [u for u in self._retiring if u.is_open]
        if upstream.is_open:
            self._retiring.append(upstream)

    def open_sessions(self) -> int:
        """HTTP sessions open right now (at most ``max_upstreams`` plus those finishing a call)."""
        return sum(u.is_open for u in [*self._upstreams.values(), *self._retiring])

    def hosted_upstream(self, prefix: str) -> Upstream:
        preset = HOSTED_PRESETS.get(prefix)
        settings = self.providers.get(prefix)
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
    def local_runtime(self) -> LocalRuntime:
        from .local import LocalRuntime

        if self._local_runtime is None:
            self._local_runtime = LocalRuntime(self.local)
        return self._local_runtime

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        for model in self._models.values():
            await model.aclose()
        for upstream in [*self._upstreams.values(), *self._retiring]:
            await upstream.aclose()
        self._models.clear()
        self._upstreams.clear()
        self._retiring.clear()
        if self._local_runtime is not None:
            self._local_runtime.close()
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
    return hub.local_runtime.model(name)


def _make_upstream(
    name: str,
    base_url: str,
    api_key: str | None,
    settings: ProviderSettings | None,
    structured: StructuredMode,
    text_completion: bool,
) -> Upstream:
    s = settings or ProviderSettings()
    return Upstream(
        name=name,
        base_url=base_url,
        api_key=api_key,
        headers=dict(s.headers),
        connect_timeout=s.connect_timeout,
        read_timeout=s.read_timeout,
        retry=RetryPolicy(max_retries=s.max_retries, deadline=s.total_timeout),
        max_response_bytes=s.max_response_bytes,
        structured=s.structured_output or structured,
        text_completion=s.text_completion if s.text_completion is not None else text_completion,
    )
