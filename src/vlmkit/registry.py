"""One registry per kind of component, and the ``register`` decorator.

An :class:`Entry` records a component's factory, its config signature (the factory's keyword
arguments), how to describe its capabilities without building it, its smallest config (used by the
conformance tests) and where it came from (vlmkit itself, a plugin distribution, or user code).

This module holds the registries only; reading them with the built-ins and plugins loaded
(``get``, ``create``, ``available``, ``entries``) is :mod:`vlmkit.components`. Component families
import :func:`register` from here.
"""

from __future__ import annotations

import contextvars
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from vlmkit._annotations import type_problem

KINDS: tuple[str, ...] = ("vision_encoder", "miner", "projector", "llm", "bridge")

F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(ValueError):
    """Base class of registry errors."""


class UnknownKindError(RegistryError):
    pass


class UnknownComponentError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DuplicateComponentError(RegistryError):
    pass


@dataclass(frozen=True)
class Origin:
    """Where an entry came from: ``"builtin"``, ``"plugin"`` (with distribution) or ``"user"``."""

    source: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None

    def __str__(self) -> str:
        if self.source == "plugin":
            return f"plugin {self.distribution} {self.version}"
        return self.source


BUILTIN = Origin("builtin")
USER = Origin("user")
_current_origin: contextvars.ContextVar[Origin | None] = contextvars.ContextVar(
    "vlmkit_registration_origin", default=None
)


@dataclass(frozen=True)
class Param:
    name: str
    default: Any = inspect.Parameter.empty
    annotation: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class Entry:
    """A registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    params: tuple[Param, ...]
    accepts_any_kwargs: bool
    origin: Origin
    tiny: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def check_kwargs(self, kwargs: dict[str, Any], where: str | None = None) -> None:
        """Raise ``TypeError`` naming any key the factory does not accept and the valid ones, and
        ``ValueError`` naming any value whose kind differs from the keyword's annotation
        (:mod:`vlmkit._annotations`)."""
        if self.accepts_any_kwargs:
            return
        where = where or f"{self.kind} {self.name!r}"
        unknown = sorted(set(kwargs) - set(self.param_names))
        if unknown:
            raise TypeError(
                f"{where}: unknown config key(s) {unknown}; valid keys: {self.param_names}"
            )
        problems = []
        for param in self.params:
            if param.name in kwargs:
                expected = type_problem(kwargs[param.name], param.annotation)
                if expected is not None:
                    problems.append(f"{param.name} must be {expected}, got {kwargs[param.name]!r}")
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))

    def describe(self, *args: Any, **kwargs: Any) -> Any:
        """The factory's capability record for this config (see :mod:`vlmkit.interfaces`), or None."""
        describe = getattr(self.factory, "describe", None)
        return None if describe is None else describe(*args, **kwargs)


def _signature(factory: Callable[..., Any]) -> tuple[tuple[Param, ...], bool]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    sig = inspect.signature(target)
    params, any_kwargs = [], False
    for i, p in enumerate(sig.parameters.values()):
        if inspect.isclass(factory) and i == 0:
            continue  # self
        if p.kind is p.VAR_KEYWORD:
            any_kwargs = True
        elif p.kind is not p.VAR_POSITIONAL:
            params.append(Param(p.name, p.default, p.annotation))
    return tuple(params), any_kwargs


class Registry:
    """Entries of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        origin: Origin,
        tiny: dict[str, Any] | None = None,
    ) -> Entry:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"component name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise RegistryError(f"{self.kind} {name!r}: factory {factory!r} is not callable")
        old = self._entries.get(name)
        if old is not None:
            if old.factory is factory:
                return old
            raise DuplicateComponentError(
                f"{self.kind} {name!r} is already registered by {old.origin} "
                f"({_qualname(old.factory)}); cannot register {_qualname(factory)} from {origin}"
            )
        if inspect.isclass(factory) and getattr(factory, "kind", None) == self.kind:
            if "name" not in vars(factory):  # the registry name, for the class's own messages
                factory.name = name
        params, any_kwargs = _signature(factory)
        doc = inspect.getdoc(factory) or ""
        entry = Entry(
            kind=self.kind,
            name=name,
            factory=factory,
            params=params,
            accepts_any_kwargs=any_kwargs,
            origin=origin,
            tiny=dict(tiny or getattr(factory, "tiny_config", None) or {}),
            description=doc.splitlines()[0] if doc else "",
        )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (e.g. one registered by a notebook or test)."""
        self.get(name)
        del self._entries[name]

    def remove_origin(self, origin: Origin) -> None:
        for name in [n for n, e in self._entries.items() if e.origin == origin]:
            del self._entries[name]

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._entries), n=5, cutoff=0.5)
            hint = f"; did you mean {close}?" if close else ""
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}{hint} Available: {sorted(self._entries)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]


_REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def registry(kind: str) -> Registry:
    """The registry of one kind; an unknown kind raises listing the valid kinds."""
    try:
        return _REGISTRIES[kind]
    except KeyError:
        raise UnknownKindError(f"unknown kind {kind!r}; expected one of {KINDS}") from None


def _origin_for(factory: Callable[..., Any]) -> Origin:
    current = _current_origin.get()
    if current is not None:
        return current
    module = getattr(factory, "__module__", "") or ""
    return BUILTIN if module == "vlmkit" or module.startswith("vlmkit.") else USER


def register(
    kind: str,
    name: str,
    factory: Callable[..., Any] | None = None,
    *,
    tiny: dict[str, Any] | None = None,
) -> Any:
    """Register ``factory`` as component ``name`` of ``kind``.

    Use as a decorator, ``@vlmkit.register("miner", "my_miner")``, or call directly with the
    factory. ``tiny`` is the smallest config (keyword arguments) the conformance tests build;
    a class may instead carry it as ``tiny_config``. Registering a taken name raises
    :class:`DuplicateComponentError`.
    """
    reg = registry(kind)

    def decorate(f: F) -> F:
        reg.add(name, f, origin=_origin_for(f), tiny=tiny)
        return f

    return decorate if factory is None else decorate(factory)  # type: ignore[arg-type]

