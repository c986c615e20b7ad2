"""vlmkit's own components, loaded through the same ``vlmkit_register`` hook as plugins."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from vlmkit.hookspecs import hookimpl

# Each family module registers its classes with the ``@vlmkit.register`` decorator on import.
BUILTIN_MODULES: tuple[str, ...] = (
    "vlmkit.encoders.clip",
    "vlmkit.encoders.convnext",
    "vlmkit.encoders.timm_encoder",
    "vlmkit.encoders.siglip",
    "vlmkit.miners.patch_info_miner",
    "vlmkit.miners.simple",
    "vlmkit.projectors.mlp",
    "vlmkit.llms.hf",
    "vlmkit.bridges.prompt",
)


@hookimpl
def vlmkit_register(register: Callable[..., Any]) -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
