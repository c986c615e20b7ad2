"""Check that a config's components fit, then create them.

:func:`plan` resolves every slot's registry entry, validates its keyword arguments against the
component's signature, asks each component to *describe* itself (widths, grids, token counts) and
checks neighbours: encoder widths → miner inputs, miner width → projector input, projector output →
LLM hidden size. A component names the keyword arguments that take a neighbour's width
(``linked_widths``, see :mod:`vlmkit.interfaces`); widths a config leaves out are filled in from the
neighbour, widths it states must agree. Every problem is collected and raised at once, by slot, name and value, before any weights
are allocated. :func:`create_components` then instantiates the components, and
:func:`vlmkit.model.build` assembles them into a model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from vlmkit._context import no_pretrained
from vlmkit.config import ENCODER_SLOTS, SLOT_KINDS, ComponentSpec, ConfigError, VLMConfig, load_config
from vlmkit.interfaces import EncoderInfo, LLMInfo, MinerInfo, ProjectorInfo
from vlmkit.components import get
from vlmkit.data.conversation import get_template
from vlmkit.plugins import load_plugins
from vlmkit.registry import Entry, RegistryError


@dataclass
class Plan:
    """A checked config: per slot, its entry, final keyword arguments and described output."""

    config: VLMConfig
    entries: dict[str, Entry] = field(default_factory=dict)
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    infos: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_view(self) -> int:
        info: MinerInfo = self.infos["miner"]
        return info.num_tokens

    @property
    def visual_tokens_per_image(self) -> int:
        """Visual tokens the LLM receives per image (all HD views together)."""
        return self.tokens_per_view * self.config.num_views


def _templates(cfg: VLMConfig) -> list[tuple[str, Any]]:
    """``(where, name)`` of every chat template the config names (its own, its training stages')."""
    named = [("chat_template", cfg.chat_template)]
    for stage, settings in (cfg.training or {}).items():
        if isinstance(settings, Mapping) and "chat_template" in settings:
            named.append((f"training.{stage}.chat_template", settings["chat_template"]))
    return named


def _describe(slot: str, entry: Entry, kwargs: dict[str, Any], errors: list[str], *args: Any) -> Any:
    try:
        return entry.describe(*args, **kwargs)
    except (ValueError, TypeError, KeyError, OSError) as err:
        errors.append(f"{slot} {entry.name!r}: {err}")
        return None


def _links(entry: Entry) -> dict[str, tuple[str, str]]:
    """The widths a component declares it takes from its neighbours (``linked_widths``), limited
    to keywords it has."""
    declared = getattr(entry.factory, "linked_widths", None) or {}
    return {key: link for key, link in declared.items() if key in entry.param_names}


def _link(plan: Plan, slot: str, errors: list[str]) -> None:
    entry, kwargs = plan.entries[slot], plan.kwargs[slot]
    for key, (source, attr) in _links(entry).items():
        if source not in plan.entries:
            continue
        info = plan.infos.get(source)
        if info is None:
            continue
        value = getattr(info, attr)
        if key not in kwargs:
            kwargs[key] = value
        elif kwargs[key] != value:
            errors.append(
                f"{slot} {entry.name!r} has {key}={kwargs[key]} but {source} "
                f"{plan.entries[source].name!r} outputs {attr}={value}"
            )


def _unlinked(plan: Plan, slot: str) -> bool:
    """Whether a keyword ``slot`` takes from a neighbour is still missing because the neighbour
    could not be described."""
    entry, kwargs = plan.entries[slot], plan.kwargs[slot]
    return any(
        key not in kwargs and source in plan.entries and plan.infos.get(source) is None
        for key, (source, _) in _links(entry).items()
    )


def plan(config: VLMConfig | Mapping[str, Any] | str | Path) -> Plan:
    """Check that a config's slots exist, accept their keyword arguments and fit together.

    Raises :class:`~vlmkit.config.ConfigError` listing every problem found. Allocates no weights.
    """
    load_plugins()  # a preset or chat template may come from a plugin
    cfg = load_config(config)
    result = Plan(cfg)
    errors: list[str] = []
    for where, template in _templates(cfg):
        try:
            get_template(template)
        except ValueError as err:
            errors.append(f"{where}: {err}")
    for slot, spec in cfg.slots().items():
        try:
            entry = get(SLOT_KINDS[slot], spec.name)
            entry.check_kwargs(spec.kwargs, where=f"{slot} {spec.name!r}")
        except (RegistryError, TypeError, ValueError) as err:
            errors.append(f"{slot}: {err}")
            continue
        result.entries[slot] = entry
        result.kwargs[slot] = dict(spec.kwargs)
    if errors:  # without entries nothing further can be checked meaningfully
        raise ConfigError("config does not build:\n  - " + "\n  - ".join(errors))

    for slot in (*ENCODER_SLOTS, "llm"):
        if slot not in result.entries:
            continue
        info = _describe(slot, result.entries[slot], result.kwargs[slot], errors)
        if info is not None and not isinstance(info, LLMInfo if slot == "llm" else EncoderInfo):
            errors.append(f"{slot} {result.entries[slot].name!r}: describe() returned {info!r}")
            info = None
        result.infos[slot] = info

    miner = result.entries["miner"]
    uses_hr = bool(getattr(miner.factory, "uses_hr", False))
    if uses_hr and cfg.hr_encoder is None:
        errors.append(f"miner {miner.name!r} mines high-resolution features but no hr_encoder is set")
    if not uses_hr and cfg.hr_encoder is not None:
        errors.append(
            f"hr_encoder {cfg.hr_encoder.name!r} is set but miner {miner.name!r} does not use one"
        )
    _link(result, "miner", errors)
    lr_info, hr_info = result.infos.get("lr_encoder"), result.infos.get("hr_encoder")
    if lr_info is not None and (hr_info is not None or not uses_hr):
        result.infos["miner"] = _describe("miner", miner, result.kwargs["miner"], errors, lr_info, hr_info)

    _link(result, "projector", errors)
    if _unlinked(result, "projector"):  # a neighbour failed: its error is reported already
        result.infos["projector"] = None
    else:
        result.infos["projector"] = _describe(
            "projector", result.entries["projector"], result.kwargs["projector"], errors
        )
    # Projectors that do not link a width through a keyword are checked on what they describe.
    proj: ProjectorInfo | None = result.infos["projector"]
    proj_entry = result.entries["projector"]
    linked = _links(proj_entry)
    for attr, source, source_attr in (("in_dim", "miner", "width"), ("out_dim", "llm", "hidden_size")):
        source_info = result.infos.get(source)
        if proj is None or source_info is None or attr in linked:
            continue
        if getattr(proj, attr) != getattr(source_info, source_attr):
            errors.append(
                f"projector {proj_entry.name!r} has {attr}={getattr(proj, attr)} but {source} "
                f"{result.entries[source].name!r} outputs {source_attr}={getattr(source_info, source_attr)}"
            )
    if "bridge" in result.entries:
        result.infos["bridge"] = _describe("bridge", result.entries["bridge"], result.kwargs["bridge"], errors)
    if errors:
        raise ConfigError("config does not build:\n  - " + "\n  - ".join(errors))
    return result


def create_components(
    checked: Plan, *, device: str | torch.device | None = None, load_pretrained: bool = True
) -> tuple[VLMConfig, dict[str, Any]]:
    """Instantiate every slot of a :class:`Plan`: ``(resolved config, {slot: component})``.

    The resolved config states every keyword argument the plan filled in. ``device="meta"``
    builds the architecture without weights or files; ``load_pretrained=False`` builds random
    weights even where a slot names pretrained ones.
    """
    meta = device is not None and torch.device(device).type == "meta"
    with contextlib.ExitStack() as stack:
        if meta or not load_pretrained:
            stack.enter_context(no_pretrained())
        if meta:
            stack.enter_context(torch.device("meta"))
        parts = {
            slot: entry.factory(**checked.kwargs[slot]) for slot, entry in checked.entries.items()
        }
    resolved = checked.config.copy()
    for slot, kwargs in checked.kwargs.items():
        setattr(resolved, slot, ComponentSpec(checked.entries[slot].name, dict(kwargs)))
    return resolved, parts


__all__ = ["plan", "create_components", "Plan", "ConfigError"]
