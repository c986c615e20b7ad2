"""Plugin discovery: built-ins, then entry points of group ``vlmkit``, one at a time.

Each entry point is loaded and its ``vlmkit_register`` hook called in its own ``try``: a plugin
that fails to import or to register is rolled back (it contributes no component), warned about
once with its distribution, version and error, and kept in :func:`plugin_failures`. vlmkit and
every other plugin keep working. That includes a plugin that raises ``SystemExit`` (``sys.exit()``)
or ``KeyboardInterrupt`` itself; a ``KeyboardInterrupt`` from the user's Ctrl-C (a SIGINT that
arrives while plugins load) still stops the program. The same goes for the
``vlmkit_register_templates`` and ``vlmkit_register_presets`` hooks (chat templates and presets).
:func:`register_commands` calls the ``vlmkit_register_commands`` hook of each loaded plugin the
same way, when the command line is built.

Environment:
- ``VLMKIT_STRICT_PLUGINS=1``: a failing plugin raises :class:`PluginError` instead.
- ``VLMKIT_DISABLE_PLUGIN_AUTOLOAD=1``: entry points are not loaded (built-ins still are).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

import pluggy

from vlmkit import hookspecs
from vlmkit.config import register_preset, remove_presets
from vlmkit.data.conversation import register_template, remove_templates
from vlmkit.registry import BUILTIN, KINDS, Origin, _current_origin, registry

ENTRY_POINT_GROUP = "vlmkit"


class PluginError(RuntimeError):
    """A plugin failed to load while ``VLMKIT_STRICT_PLUGINS=1``."""


class PluginWarning(UserWarning):
    """A plugin failed to load; vlmkit goes on without it."""


@dataclass(frozen=True)
class PluginFailure:
    entry_point: str
    distribution: str
    error: BaseException

    def __iter__(self):  # unpacks as (entry_point, distribution, error)
        return iter((self.entry_point, self.distribution, self.error))


@dataclass
class LoadedPlugin:
    entry_point: str
    distribution: str
    version: str
    components: tuple[tuple[str, str], ...]  # (kind, name)
    commands: tuple[str, ...] = ()  # added to the ``vlmkit`` command line
    module: Any = field(default=None, repr=False, compare=False)


_lock = threading.RLock()
_loaded = False
_loading = False
_strict_error: PluginError | None = None
_failures: list[PluginFailure] = []
_plugins: list[LoadedPlugin] = []
_manager_of_loaded: list[pluggy.PluginManager] = []  # the manager the loaded plugins are in


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def strict_mode() -> bool:
    """Whether ``VLMKIT_STRICT_PLUGINS`` asks for a failing plugin to raise."""
    return _env_flag("VLMKIT_STRICT_PLUGINS")


def _manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _register_fn(origin: Origin) -> Callable[..., Any]:
    def register(kind: str, name: str, factory: Callable[..., Any], *, tiny: dict | None = None):
        return registry(kind).add(name, factory, origin=origin, tiny=tiny)

    return register


def _call_hook(pm: pluggy.PluginManager, plugin: object, origin: Origin) -> None:
    """Call ``plugin``'s registration hooks: components, chat templates, presets."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    pm.subset_hook_caller("vlmkit_register", remove_plugins=others)(register=_register_fn(origin))
    pm.subset_hook_caller("vlmkit_register_templates", remove_plugins=others)(
        register=functools.partial(register_template, origin=origin)
    )
    pm.subset_hook_caller("vlmkit_register_presets", remove_plugins=others)(
        register=functools.partial(register_preset, origin=origin)
    )


def _remove(origin: Origin) -> None:
    """Roll back everything ``origin`` registered."""
    for kind in KINDS:
        registry(kind).remove_origin(origin)
    remove_templates(origin)
    remove_presets(origin)


def _components_of(origin: Origin) -> tuple[tuple[str, str], ...]:
    return tuple(
        (kind, e.name) for kind in KINDS for e in registry(kind).entries() if e.origin == origin
    )


@contextlib.contextmanager
def _watch_sigint() -> Any:
    """Record whether a real SIGINT arrived (``state["hit"]``) while passing it on as before."""
    state = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        state["hit"] = True
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def _load_entry_point(
    pm: pluggy.PluginManager, ep: metadata.EntryPoint, sigint: dict, strict: bool
) -> None:
    dist = getattr(ep, "dist", None)
    dist_name = dist.metadata["Name"] if dist is not None else "<unknown distribution>"
    version = dist.version if dist is not None else "?"
    origin = Origin("plugin", dist_name, version, ep.name)
    token = _current_origin.set(origin)  # decorators run at import time see the plugin's origin
    module = None
    try:
        module = ep.load()
        pm.register(module, name=f"{dist_name}:{ep.name}")
        _call_hook(pm, module, origin)
    except BaseException as err:  # noqa: BLE001 - isolation is the point, SystemExit included
        _remove(origin)
        if isinstance(err, KeyboardInterrupt) and sigint["hit"]:
            raise  # the user pressed Ctrl-C
        with contextlib.suppress(Exception):
            if module is not None and pm.is_registered(module):
                pm.unregister(module)
        _fail(f"vlmkit plugin {ep.name!r} ({ep.value}) from distribution {dist_name} {version} "
              f"failed to load", ep.name, f"{dist_name} {version}", err, strict)  # fmt: skip
        return
    finally:
        _current_origin.reset(token)
    _plugins.append(LoadedPlugin(ep.name, dist_name, version, _components_of(origin), module=module))


def _fail(
    what: str, entry_point: str, distribution: str, err: BaseException, strict: bool
) -> None:
    """Record a plugin's failure (for :func:`plugin_failures`; the first one is what a later
    strict :func:`load_plugins` raises), then raise it when ``strict``, else warn."""
    global _strict_error
    message = f"{what}: {type(err).__name__}: {err}"
    _failures.append(PluginFailure(entry_point, distribution, err))
    error = PluginError(message)
    error.__cause__ = err
    if _strict_error is None:
        _strict_error = error
    if strict:
        raise error
    warnings.warn(message, PluginWarning, stacklevel=4)


def load_plugins(*, strict: bool | None = None) -> None:
    """Register built-ins and entry-point plugins once (later calls do nothing).

    ``strict`` (default: ``VLMKIT_STRICT_PLUGINS``): the first failing plugin raises
    :class:`PluginError`, here and at every later call; ``strict=False`` loads every plugin and
    keeps failures for :func:`plugin_failures` (what ``vlmkit plugins`` reports)."""
    global _loaded, _loading, _strict_error
    strict = strict_mode() if strict is None else strict
    if _loaded and _strict_error is not None and strict:
        raise _strict_error
    if _loaded or _loading:
        return
    with _lock:
        if _loaded or _loading:
            return
        _loading = True
        try:
            pm = _manager()
            from vlmkit import _builtins

            pm.register(_builtins, name="vlmkit.builtins")
            token = _current_origin.set(BUILTIN)
            try:
                _call_hook(pm, _builtins, BUILTIN)
            finally:
                _current_origin.reset(token)
            if not _env_flag("VLMKIT_DISABLE_PLUGIN_AUTOLOAD"):
                eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
                seen: set[tuple[str, str]] = set()
                with _watch_sigint() as sigint:
                    for ep in eps:
                        if (ep.name, ep.value) in seen:  # same distribution on sys.path twice
                            continue
                        seen.add((ep.name, ep.value))
                        _load_entry_point(pm, ep, sigint, strict)
            _manager_of_loaded[:] = [pm]
            _loaded = True
        except PluginError:
            _manager_of_loaded[:] = [pm]
            _loaded = True  # built-ins and the plugins before the failing one stay registered
            raise
        finally:
            _loading = False


def _command_tree(cli: Any) -> dict[tuple[str, ...], Any]:
    """``{path: command}`` of ``cli``'s commands and, one level down, of its groups' commands."""
    tree: dict[tuple[str, ...], Any] = {}
    for name, command in cli.commands.items():
        tree[(name,)] = command
        for sub, sub_command in (getattr(command, "commands", None) or {}).items():
            tree[(name, sub)] = sub_command
    return tree


def _restore(cli: Any, tree: dict[tuple[str, ...], Any]) -> None:
    """Put ``cli`` back to ``tree`` (what :func:`_command_tree` recorded)."""
    cli.commands.clear()
    cli.commands.update({path[0]: c for path, c in tree.items() if len(path) == 1})
    for (name,), command in [(p, c) for p, c in tree.items() if len(p) == 1]:
        if getattr(command, "commands", None) is not None:
            command.commands.clear()
            command.commands.update({p[1]: c for p, c in tree.items() if len(p) == 2 and p[0] == name})


def register_commands(cli: Any) -> None:
    """Let every loaded plugin add commands to ``cli`` (a ``click.Group``), one plugin at a time;
    a plugin may also add commands to a group that is there (e.g. ``vlmkit bench``).

    A plugin whose ``vlmkit_register_commands`` raises, or replaces a command that is already
    there, is rolled back (``cli`` keeps the commands it had) and reported as a failure. This
    runs while the command line is built, so it never raises: every plugin is tried, and under
    ``VLMKIT_STRICT_PLUGINS=1`` the first failure is raised by the next :func:`load_plugins` (a
    command's) instead of warned about here.
    """
    strict = strict_mode()
    with warnings.catch_warnings():
        if strict:
            warnings.simplefilter("ignore", PluginWarning)
        load_plugins(strict=False)
        _add_commands(cli)


def _add_commands(cli: Any) -> None:
    """Call each loaded plugin's ``vlmkit_register_commands``, rolling back the ones that fail."""
    if not _manager_of_loaded:
        return
    pm = _manager_of_loaded[0]
    for plugin in _plugins:
        if plugin.module is None or not pm.is_registered(plugin.module):
            continue
        before = _command_tree(cli)
        others = [p for p in pm.get_plugins() if p is not plugin.module]
        try:
            pm.subset_hook_caller("vlmkit_register_commands", remove_plugins=others)(cli=cli)
            after = _command_tree(cli)
            replaced = sorted(" ".join(p) for p, c in before.items() if after.get(p) is not c)
            if replaced:
                raise PluginError(f"it replaces existing command(s) {replaced}")
        except Exception as err:  # noqa: BLE001 - isolation is the point
            _restore(cli, before)
            _fail(f"vlmkit plugin {plugin.entry_point!r} from distribution {plugin.distribution} "
                  f"{plugin.version} failed to add commands", plugin.entry_point,
                  f"{plugin.distribution} {plugin.version}", err, False)  # fmt: skip
            continue
        plugin.commands = tuple(sorted(" ".join(p) for p in set(after) - set(before)))


def plugin_failures() -> list[PluginFailure]:
    """``[(entry_point, distribution, error)]`` for every plugin that failed to load (a report:
    it does not raise, also under ``VLMKIT_STRICT_PLUGINS=1``)."""
    load_plugins(strict=False)
    return list(_failures)


def loaded_plugins() -> list[LoadedPlugin]:
    """The entry-point plugins that loaded, with the components each registered (a report: it
    does not raise)."""
    load_plugins(strict=False)
    return list(_plugins)


def reload_plugins() -> None:
    """Forget entry-point plugins and load them again (for tests and long-lived sessions)."""
    global _loaded, _strict_error
    with _lock:
        for plugin in _plugins:
            _remove(Origin("plugin", plugin.distribution, plugin.version, plugin.entry_point))
        for kind in KINDS:  # what a plugin registered outside its hook (at import)
            for entry in registry(kind).entries():
                if entry.origin.source == "plugin":
                    registry(kind).remove_origin(entry.origin)
        _failures.clear()
        _plugins.clear()
        _strict_error = None
        _loaded = False
    load_plugins()
