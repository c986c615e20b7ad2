"""pluggy markers and the hook specifications that plugins implement.

A plugin module implements any of the hooks::

    import vlmkit

    @vlmkit.hookimpl
    def vlmkit_register(register):
        register("vision_encoder", "my-encoder", MyEncoder)

    @vlmkit.hookimpl
    def vlmkit_register_templates(register):
        register(ChatTemplate(name="my-template", ...))

    @vlmkit.hookimpl
    def vlmkit_register_presets(register):
        register("my-preset", Path(__file__).with_name("my-preset.yaml"))

    @vlmkit.hookimpl
    def vlmkit_register_commands(cli):
        cli.add_command(my_command)

and is announced by its distribution under the ``vlmkit`` entry-point group. vlmkit's own
components are loaded through the same ``vlmkit_register`` hook.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT_NAME = "vlmkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def vlmkit_register(register: Callable[..., Any]) -> None:
    """Register components by calling ``register(kind, name, factory, *, tiny=None)``.

    ``kind`` is one of :data:`vlmkit.KINDS`; ``factory`` is a class or function whose keyword
    arguments are the component's config. Return nothing: vlmkit controls duplicates and records
    which distribution each component came from.
    """


@hookspec
def vlmkit_register_commands(cli: Any) -> None:
    """Add commands to the ``vlmkit`` command line: ``cli`` is its ``click.Group``.

    Call ``cli.add_command(command)`` or decorate with ``@cli.command()`` / ``@cli.group()``. A new
    name only: replacing one of vlmkit's commands (or another plugin's) is a failure of the plugin,
    which is then rolled back and reported like a failed registration.
    """


@hookspec
def vlmkit_register_templates(register: Callable[..., Any]) -> None:
    """Add chat templates by calling ``register(template)`` with a
    :class:`vlmkit.data.conversation.ChatTemplate`; a config names it by ``template.name``.
    A name that is taken fails the plugin (rolled back, reported)."""


@hookspec
def vlmkit_register_presets(register: Callable[..., Any]) -> None:
    """Add presets by calling ``register(name, source)``: ``source`` is a path to a YAML or JSON
    config or a config dict (``base:`` may name any preset). A taken name fails the plugin."""
