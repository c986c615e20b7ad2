"""The registries as users read them: built-ins and plugins loaded on first use.

:mod:`vlmkit.registry` holds the registries; :mod:`vlmkit.plugins` fills them. Every read here
loads the built-ins and the entry-point plugins first (once), so a name from any installed plugin
resolves.
"""

from __future__ import annotations

from typing import Any

from vlmkit import config
from vlmkit.plugins import load_plugins
from vlmkit.registry import KINDS, Entry, registry


def get(kind: str, name: str) -> Entry:
    """The :class:`~vlmkit.registry.Entry` of a component; an unknown name raises listing close
    matches."""
    load_plugins()
    return registry(kind).get(name)


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Build component ``name`` of ``kind`` with its keyword arguments.

    Unknown names raise :class:`~vlmkit.registry.UnknownComponentError` listing close names;
    unknown keyword arguments raise ``TypeError`` naming them and the valid ones.
    """
    entry = get(kind, name)
    entry.check_kwargs(kwargs)
    return entry.factory(**kwargs)


def available(kind: str | None = None) -> list[str] | dict[str, list[str]]:
    """Sorted names of one kind, or ``{kind: names}`` for every kind."""
    load_plugins()
    if kind is None:
        return {k: registry(k).names() for k in KINDS}
    return registry(kind).names()


def presets() -> list[str]:
    """Sorted preset names: vlmkit's and those plugins add."""
    load_plugins()
    return config.presets()


def entries(kind: str | None = None) -> list[Entry]:
    """Every entry of one kind (or of all kinds), sorted by kind then name."""
    load_plugins()
    kinds = KINDS if kind is None else (registry(kind).kind,)
    return [e for k in kinds for e in registry(k).entries()]
