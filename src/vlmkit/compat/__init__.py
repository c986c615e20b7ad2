"""Importers of other projects' checkpoint formats: :mod:`vlmkit.compat.mgm` (official Mini-Gemini).

Submodules load on first use, so ``import vlmkit`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("mgm",)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"vlmkit.compat.{name}")
    raise AttributeError(f"module 'vlmkit.compat' has no attribute {name!r}")
