"""Real installed-looking distributions for plugin tests: a ``.dist-info`` with ``entry_points.txt``
next to the plugin module, in a folder that the test puts on ``sys.path`` / ``PYTHONPATH``."""

from __future__ import annotations

import textwrap
from pathlib import Path

GOOD = '''
"""A plugin that registers a projector through the hook."""
import torch
from torch import nn
import vlmkit
from vlmkit.interfaces import Projector, ProjectorInfo


class DoubleLinear(Projector):
    """Two stacked Linear layers (test plugin)."""

    tiny_config = {"in_dim": 4, "out_dim": 6}

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.a = nn.Linear(in_dim, out_dim)
        self.b = nn.Linear(out_dim, out_dim)

    @classmethod
    def describe(cls, in_dim, out_dim, **_):
        return ProjectorInfo(in_dim, out_dim)

    def forward(self, x):
        return self.b(self.a(x))


@vlmkit.hookimpl
def vlmkit_register(register):
    register("projector", "good-double-linear", DoubleLinear)


@vlmkit.hookimpl
def vlmkit_register_templates(register):
    from vlmkit.data.conversation import ChatTemplate

    register(ChatTemplate(name="good-template", user_format="Q: {content}\\n", assistant_prefix="A:"))


@vlmkit.hookimpl
def vlmkit_register_presets(register):
    register("good-preset", {"base": "mgm-tiny", "chat_template": "good-template"})


@vlmkit.hookimpl
def vlmkit_register_commands(cli):
    import click

    @cli.command("hello-plugin")
    @click.argument("name")
    def hello(name):
        """Greet NAME (test plugin)."""
        click.echo(f"hello {name} from vlmkit-test-good")
'''

BROKEN = '''
raise RuntimeError("this plugin is broken on purpose")
'''

DUPLICATE = '''
"""Registers a new miner, then a name vlmkit already has: the whole plugin is rolled back."""
import vlmkit
from vlmkit.miners.simple import IdentityMiner


class AnotherIdentity(IdentityMiner):
    pass


@vlmkit.hookimpl
def vlmkit_register(register):
    register("miner", "dup-plugin-fresh-name", AnotherIdentity)
    register("miner", "identity", AnotherIdentity)


@vlmkit.hookimpl
def vlmkit_register_presets(register):  # never kept: the plugin fails in vlmkit_register
    register("dup-plugin-preset", {"base": "mgm-tiny"})
'''

CLASH = '''
"""Adds a command, then replaces vlmkit's `list`: the whole plugin's commands are rolled back."""
import click
import vlmkit


@vlmkit.hookimpl
def vlmkit_register_commands(cli):
    @cli.command("clash-fresh-command")
    def fresh():
        click.echo("fresh")

    @cli.command("list")
    def hijack():
        click.echo("hijacked")
'''


def write_distribution(root: Path, dist: str, version: str, module: str, source: str) -> None:
    """Write ``module.py`` and ``<dist>-<version>.dist-info`` announcing it in group ``vlmkit``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[vlmkit]\n{module} = {module}\n")


def write_all(root: Path) -> None:
    write_distribution(root, "vlmkit-test-good", "1.2.3", "vlmkit_test_good", GOOD)
    write_distribution(root, "vlmkit-test-broken", "0.0.1", "vlmkit_test_broken", BROKEN)
    write_distribution(root, "vlmkit-test-dup", "0.1", "vlmkit_test_dup", DUPLICATE)
    write_distribution(root, "vlmkit-test-clash", "0.2", "vlmkit_test_clash", CLASH)
