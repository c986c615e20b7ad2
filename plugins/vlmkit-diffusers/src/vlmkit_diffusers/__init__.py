"""vlmkit-diffusers: the ``diffusers`` bridge, announced to vlmkit through the ``vlmkit`` entry point.

vlmkit calls :func:`vlmkit_register` once when it first reads a registry; the bridge class lives
in :mod:`vlmkit_diffusers.bridge` and imports diffusers only when a pipeline is first needed.
"""

from __future__ import annotations

from typing import Any, Callable

import vlmkit

__version__ = "0.1.0"


@vlmkit.hookimpl
def vlmkit_register(register: Callable[..., Any]) -> None:
    from vlmkit_diffusers.bridge import DiffusersBridge

    register("bridge", "diffusers", DiffusersBridge)
