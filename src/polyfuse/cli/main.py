"""The ``polyfuse`` command group and the error boundary: user mistakes exit 2 with one line, no traceback."""

from __future__ import annotations

from typing import Any

import click

from ..errors import PolyfuseError, UserError

__all__ = ["cli", "main"]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except PolyfuseError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="polyfuse")
def cli() -> None:
    """polyfuse: one prompt, a pool of LLMs, a judge, one answer."""


def _register() -> None:
    from . import code, keys, log, lsp, mcp, models, run, serve, usage
    from . import eval as eval_cli

    cli.add_command(run.run)
    cli.add_command(models.models)
    cli.add_command(serve.serve)
    cli.add_command(code.code)
    cli.add_command(lsp.lsp)
    cli.add_command(mcp.mcp)
    cli.add_command(log.log)
    cli.add_command(keys.keys)
    cli.add_command(usage.usage)
    cli.add_command(eval_cli.eval_command)


_register()


def main() -> None:
    cli(prog_name="polyfuse")


if __name__ == "__main__":  # pragma: no cover
    main()
