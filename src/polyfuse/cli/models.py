"""``polyfuse models``: bundled models, provider prefixes and which keys are missing."""

from __future__ import annotations

import click

from ..config import load_config
from ..providers.local import BUNDLED
from ..providers.registry import HOSTED_PRESETS, ProviderHub


@click.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (default: ./polyfuse.toml)."
)
def models(config_path: str | None) -> None:
    """List bundled models, provider prefixes and which API keys are missing."""
    cfg = load_config(config_path)
    hub = ProviderHub.from_config(cfg)
    click.echo("bundled local models (offline):")
    for name, b in BUNDLED.items():
        click.echo(f"  local/{name:<16} {b.kind:<5} {b.description}")
    for alias, path in cfg.local.models.items():
        click.echo(f"  local/{alias:<16} file  {path}")
    click.echo("  local:/path/to/model.gguf   any GGUF file (chat template from the file when it has one)")
    click.echo("\nprovider prefixes:")
    missing = hub.missing_keys()
    for prefix in sorted(set(HOSTED_PRESETS) | set(cfg.providers)):
        preset = HOSTED_PRESETS.get(prefix)
        settings = cfg.providers.get(prefix)
        base = (settings.base_url if settings and settings.base_url else None) or (
            preset.base_url if preset else "?"
        )
        key = (
            f"missing: set {missing[prefix]}"
            if prefix in missing
            else "key set"
            if hub.key_for(prefix)[0]
            else "no key needed"
        )
        click.echo(f"  {prefix + '/':<12} {base:<55} {key}")
    click.echo("  http(s)://host:port/v1#model   any OpenAI-compatible server (vLLM, llama.cpp, LM Studio)")
    click.echo("\npresets:")
    for name, p in cfg.all_presets().items():
        default = " (default)" if name == cfg.default_preset else ""
        click.echo(
            f"  {name}{default}: {p.mode}, pool {', '.join(str(m) if isinstance(m, str) else m.model for m in p.pool)}; judge {p.judge}"
        )
