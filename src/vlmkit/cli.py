"""The ``vlmkit`` command: list components and plugins, check and summarise configs, chat, train,
evaluate; plugins add their own commands (``vlmkit_register_commands``)."""

from __future__ import annotations

import sys
from typing import Any

import click

from vlmkit import plugins as plugin_state
from vlmkit._version import __version__
from vlmkit.components import entries
from vlmkit.registry import KINDS


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vlmkit")
def cli() -> None:
    """vlmkit: compose, inspect, train and evaluate vision-language models."""


@cli.command("list")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only this kind.")
def list_command(kind: str | None) -> None:
    """Registered components by kind, with where each came from."""
    current = None
    for entry in entries(kind):
        if entry.kind != current:
            current = entry.kind
            click.echo(f"{current}:")
        click.echo(f"  {entry.name:<24} {str(entry.origin):<32} {entry.description}")


@cli.command("plugins")
def plugins_command() -> None:
    """Entry-point plugins: those loaded (with their components) and those that failed.

    Every plugin is tried, also under ``VLMKIT_STRICT_PLUGINS=1``; there a failure makes the
    exit status 1 after the report."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", plugin_state.PluginWarning)
        plugin_state.load_plugins(strict=False)
    loaded = plugin_state.loaded_plugins()
    failures = plugin_state.plugin_failures()
    click.echo(f"loaded ({len(loaded)}):")
    for p in loaded:
        parts = [f"{k}:{n}" for k, n in p.components] + [f"command:{c}" for c in p.commands]
        click.echo(f"  {p.entry_point} ({p.distribution} {p.version}): "
                   f"{', '.join(parts) or 'no components'}")
    click.echo(f"failed ({len(failures)}):")
    for f in failures:
        click.echo(f"  {f.entry_point} ({f.distribution}): {type(f.error).__name__}: {f.error}")
    if failures and plugin_state.strict_mode():
        sys.exit(1)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


@cli.command("build")
@click.argument("config")
@click.option("--summary", is_flag=True, help="Print slots, parameter counts and visual tokens.")
def build_command(config: str, summary: bool) -> None:
    """Check CONFIG (preset name, .yaml or .json) and build it on the meta device (no weights)."""
    from vlmkit.model import build
    from vlmkit.config import ConfigError
    from vlmkit.train.stages import count_parameters

    try:
        model = build(config, device="meta")
    except (ConfigError, ValueError, TypeError, OSError) as err:
        _fail(str(err))
        return
    name = model.config.name or config
    click.echo(f"{name}: builds (architecture only, on the meta device)")
    if not summary:
        return
    click.echo(f"{'slot':<12} {'component':<22} {'trainable':>12} {'frozen':>12}")
    total_t = total_f = 0
    for slot, spec in model.config.slots().items():
        t, f = count_parameters(getattr(model, slot, None))
        total_t, total_f = total_t + t, total_f + f
        click.echo(f"{slot:<12} {spec.name:<22} {_human(t):>12} {_human(f):>12}")
    click.echo(f"{'total':<12} {'':<22} {_human(total_t):>12} {_human(total_f):>12}")
    views = model.num_views
    click.echo(
        f"visual tokens per image: {model.num_visual_tokens}"
        + (f" ({views} views x {model.tokens_per_view})" if views > 1 else "")
    )
    click.echo(f"chat template: {model.config.chat_template}")


@cli.group("bench")
def bench_group() -> None:
    """Benchmarks: ``serve`` here; plugins add theirs (vlmkit-bench: ``finedetail``, ``mining``)."""


# vlmkit's commands that live beside the code they drive: (group, module, attribute); a group of
# None attaches to the top-level `vlmkit` command. The modules import heavy code inside their
# functions so that `vlmkit --help` stays quick.
_COMMANDS: list[tuple[str | None, str, str]] = [
    (None, "vlmkit.chat", "chat_command"),
    (None, "vlmkit.chat", "generate_image_command"),
    (None, "vlmkit.train.command", "train_command"),
    (None, "vlmkit.eval.vqa", "eval_command"),
    (None, "vlmkit.serve._command", "serve_command"),
    (None, "vlmkit.serve._web", "web_command"),
    ("bench", "vlmkit.serve._bench", "bench_serve_command"),
]


def _attach_commands() -> None:
    import importlib

    groups = {None: cli, "bench": bench_group}
    for group, module, attribute in _COMMANDS:
        groups[group].add_command(getattr(importlib.import_module(module), attribute))
    plugin_state.register_commands(cli)  # plugins' commands (vlmkit-bench: `demo`, `bench ...`)


_attach_commands()


def main() -> None:
    """The ``vlmkit`` command. Errors the user can fix that escape a command (a failing plugin
    under ``VLMKIT_STRICT_PLUGINS=1``, a bad config, a full disk) end it with one line, status 2."""
    from vlmkit.config import ConfigError

    try:
        cli()
    except (plugin_state.PluginError, ConfigError, OSError) as err:
        _fail(str(err))


if __name__ == "__main__":  # pragma: no cover
    main()
