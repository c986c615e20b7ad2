"""pluggy markers and the hook specification that plugins implement.

A plugin module implements::

    import vlmkit

    @vlmkit.hookimpl
    def vlmkit_register(register):
        register("vision_encoder", "my-encoder", MyEncoder)

and is announced by its distribution under the ``vlmkit`` entry-point group. vlmkit's own
components are loaded through the same hook.
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
