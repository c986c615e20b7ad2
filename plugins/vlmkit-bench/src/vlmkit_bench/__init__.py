"""vlmkit-bench: the ``vlmkit demo`` and ``vlmkit bench`` commands, a harness beside the library.

- ``vlmkit demo`` / ``vlmkit bench finedetail``: the fine-detail benchmark
  (:mod:`vlmkit_bench.finedetail`), Mini-Gemini's claim reproduced offline on a CPU;
- ``vlmkit bench mining``: the backends of :func:`vlmkit.ops.patch_info_mining` timed at
  Mini-Gemini's shapes (:mod:`vlmkit_bench.op_timing`).

vlmkit calls :func:`vlmkit_register_commands` once, when its command line is built; the commands'
modules are imported then, and import their heavy dependencies only when they run. ``finedetail``
and ``mining`` join vlmkit's own ``bench`` group (which holds ``serve``), or a ``bench`` group of
this plugin's when the command line has none.
"""

from __future__ import annotations

import click

import vlmkit

__version__ = "0.1.0"


@click.group("bench")
def bench() -> None:
    """Benchmarks: the fine-detail task and the mining op's backends."""


@vlmkit.hookimpl
def vlmkit_register_commands(cli: click.Group) -> None:
    from vlmkit_bench.finedetail import demo_command, finedetail_command
    from vlmkit_bench.op_timing import mining_command

    group = cli.commands.get("bench")
    if not isinstance(group, click.Group):
        group = bench
        cli.add_command(group)
    group.add_command(finedetail_command)
    group.add_command(mining_command)
    cli.add_command(demo_command)
