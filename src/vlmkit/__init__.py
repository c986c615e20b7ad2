"""vlmkit: swappable vision-language-model components.

Public names only (the contract is in ``docs/architecture.md``): registries (``register``,
``create``, ``available``), plugins (``hookimpl``, ``plugin_failures``), configs and the builder
(``presets``, ``plan``, ``build``) and the model (``VisionLanguageModel``). ``vlmkit.ops`` and ``vlmkit.compat`` load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from vlmkit.builder import build, plan  # noqa: E402
from vlmkit.config import ComponentSpec, ConfigError, VLMConfig, load_config, presets  # noqa: E402
from vlmkit.hookspecs import hookimpl  # noqa: E402
from vlmkit.model import VisionLanguageModel  # noqa: E402
from vlmkit.plugins import plugin_failures  # noqa: E402
from vlmkit.registry import KINDS, available, create, register  # noqa: E402

_LAZY_SUBMODULES = ("ops", "compat", "bench", "train", "data", "kernels")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"vlmkit.{name}")
    raise AttributeError(f"module 'vlmkit' has no attribute {name!r}")


__all__ = [
    "KINDS",
    "register",
    "create",
    "available",
    "plugin_failures",
    "hookimpl",
    "presets",
    "load_config",
    "VLMConfig",
    "ComponentSpec",
    "ConfigError",
    "plan",
    "build",
    "VisionLanguageModel",
]
