"""Model configs: one :class:`ComponentSpec` per slot plus model-level fields.

A config is data. It loads from a dict, a YAML or JSON file, or a preset name (``vlmkit.presets()``);
a preset or file may start from another with ``base: <preset or path>`` and override slots or keys
(a relative path is taken from the folder of the file that names it).
Each slot is ``{"name": <registry name>, **keyword arguments}`` (or just the name). Unknown keys at
the top level are an error that names them and the valid ones; component keyword arguments are
checked against the component's signature by the builder.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from vlmkit.data.views import num_views

SLOTS: tuple[str, ...] = ("lr_encoder", "hr_encoder", "miner", "projector", "llm", "bridge")
OPTIONAL_SLOTS: frozenset[str] = frozenset({"hr_encoder", "bridge"})
SLOT_KINDS: dict[str, str] = {
    "lr_encoder": "vision_encoder",
    "hr_encoder": "vision_encoder",
    "miner": "miner",
    "projector": "projector",
    "llm": "llm",
    "bridge": "bridge",
}
# Subsets of SLOTS, in pipeline order: the vision towers, and every slot that holds a torch module
# (all but the bridge, which may be a plain object): those that train and whose weights are saved.
ENCODER_SLOTS: tuple[str, ...] = tuple(s for s in SLOTS if SLOT_KINDS[s] == "vision_encoder")
MODULE_SLOTS: tuple[str, ...] = tuple(s for s in SLOTS if SLOT_KINDS[s] != "bridge")


class ConfigError(ValueError):
    """A config is malformed or its slots do not fit together."""


@dataclass
class ComponentSpec:
    """A slot's component: its registry ``name`` and its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, slot: str, value: Any) -> ComponentSpec:
        if isinstance(value, ComponentSpec):
            return copy.deepcopy(value)
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            if "name" not in value:
                raise ConfigError(f"slot {slot!r}: missing 'name' (the registry name); got {dict(value)}")
            kwargs = {k: v for k, v in value.items() if k != "name"}
            return cls(str(value["name"]), copy.deepcopy(kwargs))
        raise ConfigError(
            f"slot {slot!r}: expected a component name or a mapping with 'name', got {value!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **copy.deepcopy(self.kwargs)}


@dataclass
class VLMConfig:
    """A vision-language model composition.

    Model-level fields:
    - ``image_aspect_ratio``: ``"pad"`` (pad to square with the mean colour), ``"resize"`` or ``"crop"``;
    - ``image_grid`` / ``image_global``: MGM-HD views (grid 2 + a global view gives 5 LR views);
    - ``chat_template``: name of a template in :mod:`vlmkit.data.conversation`;
    - ``image_label``: written before each ``<image>`` of a chat prompt with two or more images,
      ``{index}`` counting from 1 (Mini-Gemini: ``"Image {index}:"``; default ``""``: no label);
    - ``training``: stage defaults for :mod:`vlmkit.train` (learning rates, batch sizes).
    """

    lr_encoder: ComponentSpec
    projector: ComponentSpec
    llm: ComponentSpec
    miner: ComponentSpec = field(default_factory=lambda: ComponentSpec("identity"))
    hr_encoder: ComponentSpec | None = None
    bridge: ComponentSpec | None = None
    name: str | None = None
    description: str = ""
    image_aspect_ratio: str = "pad"
    image_grid: int = 1
    image_global: bool = False
    chat_template: str = "vicuna_v1"
    image_label: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLMConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        data.pop("base", None)
        valid = cls.field_names()
        unknown = [k for k in data if k not in valid]
        if unknown:
            hints = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
            hint = "".join(f"; {k!r}: did you mean {h[0]!r}?" for k, h in hints.items() if h)
            raise ConfigError(f"unknown config key(s) {unknown}{hint} Valid keys: {valid}")
        missing = [s for s in ("lr_encoder", "projector", "llm") if data.get(s) is None]
        if missing:
            raise ConfigError(f"config is missing required slot(s) {missing}")
        for slot in SLOTS:
            if data.get(slot) is not None:
                data[slot] = ComponentSpec.parse(slot, data[slot])
            elif slot in data:
                del data[slot]
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ComponentSpec):
                value = value.to_dict()
            elif value is None and f.name in OPTIONAL_SLOTS:
                continue
            out[f.name] = copy.deepcopy(value)
        return out

    def slots(self) -> dict[str, ComponentSpec]:
        """The filled slots, in pipeline order."""
        return {s: getattr(self, s) for s in SLOTS if getattr(self, s) is not None}

    @property
    def num_views(self) -> int:
        """Views per image (:func:`vlmkit.data.views.num_views`)."""
        return num_views(self.image_grid, self.image_global)

    def copy(self) -> VLMConfig:
        return copy.deepcopy(self)


def check_image_label(label: Any) -> str:
    """``label`` if it is ``""`` or a format whose only field is ``{index}``; else ConfigError."""
    example = "Image {index}:"
    if not isinstance(label, str):
        raise ConfigError(f"image_label must be a str such as {example!r}, got {label!r}")
    if not label:
        return label
    try:
        label.format(index=1)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"image_label {label!r} must be a format whose only field is '{{index}}' "
            f"(e.g. {example!r}); {type(err).__name__}: {err}"
        ) from None
    if "{index}" not in label:
        raise ConfigError(f"image_label {label!r} has no '{{index}}' (e.g. {example!r})")
    return label


ASPECT_RATIOS: tuple[str, ...] = ("pad", "resize", "crop")


def _check_fields(config: VLMConfig) -> None:
    """Model-level fields have the kind their annotation names (a string ``'no'`` is not a bool,
    ``2.5`` not an integer) and a valid value."""
    from vlmkit._annotations import type_problem

    problems = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name not in SLOTS:
            expected = type_problem(value, f.type)
            if expected is not None:
                problems.append(f"{f.name} must be {expected}, got {value!r}")
    if not problems and config.image_grid < 1:
        problems.append(f"image_grid must be an integer >= 1, got {config.image_grid!r}")
    if not problems and config.image_aspect_ratio not in ASPECT_RATIOS:
        problems.append(
            f"image_aspect_ratio must be one of {list(ASPECT_RATIOS)}, got {config.image_aspect_ratio!r}"
        )
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    check_image_label(config.image_label)


def _preset_dir() -> Any:
    return resources.files("vlmkit") / "presets"


# Presets added by plugins: name -> (path or config dict, origin).
_PLUGIN_PRESETS: dict[str, tuple[Any, Any]] = {}


def _shipped() -> list[str]:
    return [p.name[: -len(".yaml")] for p in _preset_dir().iterdir() if p.name.endswith(".yaml")]


def presets() -> list[str]:
    """Sorted names of the presets shipped with vlmkit and those loaded plugins added."""
    return sorted([*_shipped(), *_PLUGIN_PRESETS])


def register_preset(name: str, source: str | Path | Mapping[str, Any], *, origin: Any = None) -> None:
    """Add preset ``name`` from a YAML/JSON path or a config dict (plugins do it through
    ``vlmkit_register_presets``); a taken name raises ConfigError."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a preset name must be a non-empty string, got {name!r}")
    if name in presets():
        raise ConfigError(f"preset {name!r} already exists")
    if not isinstance(source, (str, Path, Mapping)):
        raise ConfigError(f"preset {name!r}: expected a path or a mapping, got {type(source).__name__}")
    _PLUGIN_PRESETS[name] = (source, origin)


def remove_presets(origin: Any) -> None:
    """Forget the presets a plugin (``origin``) added."""
    for name in [n for n, (_, o) in _PLUGIN_PRESETS.items() if o == origin]:
        del _PLUGIN_PRESETS[name]


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            if any(k in value and value[k] != out[key].get(k) for k in ("name", "model_type")):
                out[key] = copy.deepcopy(dict(value))  # another component or architecture: afresh
            else:
                out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_mapping_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON file; :class:`ConfigError` naming the file and the line of a
    syntax error, or what was found instead of a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path} is not valid YAML: {problem}{at}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _resolve(
    source: str | Path | Mapping[str, Any], seen: tuple[str, ...] = (), folder: Path | None = None
) -> dict[str, Any]:
    """Raw config dict with ``base:`` chains merged; ``folder``: where a relative path is taken
    from (the folder of the file whose ``base:`` names it)."""
    if isinstance(source, Mapping):
        data = dict(source)
    elif not isinstance(source, (str, Path)):
        raise ConfigError(f"'base' must be a preset name or a path, got {source!r}")
    else:
        text = str(source)
        if text in seen:
            raise ConfigError(f"config 'base' chain loops: {' -> '.join((*seen, text))}")
        seen = (*seen, text)
        path = Path(text).expanduser()
        if folder is not None and not path.is_absolute():
            path = folder / path
        if path.suffix in {".yaml", ".yml", ".json"}:
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist")
            data = read_mapping_file(path)
            folder = path.parent
        elif text in _PLUGIN_PRESETS:
            source = _PLUGIN_PRESETS[text][0]
            if isinstance(source, Mapping):
                data = copy.deepcopy(dict(source))
            else:
                data = read_mapping_file(Path(source))
                folder = Path(source).parent
            data.setdefault("name", text)
        elif text in presets():
            data = yaml.safe_load((_preset_dir() / f"{text}.yaml").read_text())
            data.setdefault("name", text)
        else:
            close = difflib.get_close_matches(text, presets(), n=3, cutoff=0.4)
            hint = f"; did you mean {close}?" if close else ""
            raise ConfigError(
                f"unknown preset {text!r}{hint} Expected a preset name from {presets()} "
                f"or a path to a .yaml/.json file"
            )
    base = data.pop("base", None)
    if base is not None:
        parent = _resolve(base, seen, folder if not isinstance(source, Mapping) else None)
        parent.pop("name", None)
        data = _deep_merge(parent, data)
    return data


def load_config(config: VLMConfig | Mapping[str, Any] | str | Path) -> VLMConfig:
    """A :class:`VLMConfig` from a config object, dict, YAML/JSON path, or preset name."""
    if isinstance(config, VLMConfig):
        return config.copy()
    if not isinstance(config, (Mapping, str, Path)):
        raise ConfigError(
            f"expected a VLMConfig, dict, path or preset name, got {type(config).__name__}"
        )
    return VLMConfig.from_dict(_resolve(config))
