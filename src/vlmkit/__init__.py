"""vlmkit: swappable vision-language-model components.

The public names (the contract is in ``docs/architecture.md``), re-exported from the modules that
define them: registries (``register``, ``create``, ``available``), plugins (``hookimpl``,
``plugin_failures``), configs, the fit check and the builder (``presets``, ``plan``, ``build``), the
model (``VisionLanguageModel``) and ``load``, which resolves any model spec (preset, config file,
saved directory, MGM release). This module is the facade: nothing inside vlmkit imports it.
``vlmkit.ops``, ``vlmkit.compat`` and the other subpackages load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from vlmkit._version import __version__
from vlmkit.builder import plan
from vlmkit.components import available, create, presets
from vlmkit.config import ComponentSpec, ConfigError, VLMConfig, load_config
from vlmkit.hookspecs import hookimpl
from vlmkit.loading import LoadError, load
from vlmkit.model import VisionLanguageModel, build
from vlmkit.plugins import plugin_failures
from vlmkit.registry import KINDS, register

_LAZY_SUBMODULES = ("ops", "compat", "train", "data", "kernels", "eval")


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
    "load",
    "LoadError",
    "VisionLanguageModel",
]
