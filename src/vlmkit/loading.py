""":func:`load`: the one resolver of model specs (``vlmkit.load``).

A spec is a preset name, a config file (``.yaml``/``.yml``/``.json``), a directory written by
:meth:`~vlmkit.model.VisionLanguageModel.save_pretrained`, or an official Mini-Gemini release
directory. Every command that loads a model (``chat``, ``generate-image``, ``train``, ``eval``)
goes through it, so they all accept the same specs and report a bad one the same way: a
:class:`LoadError` whose one line names the spec and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlmkit.components import presets
from vlmkit.dtypes import resolve_dtype
from vlmkit.model import VisionLanguageModel, build

# What loading a directory can raise that means "this is not a loadable model", not a bug.
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError)


class LoadError(ValueError):
    """A spec that names nothing loadable (a missing file, an unknown preset...): one line."""


def load(
    spec: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    what: str = "model",
) -> VisionLanguageModel:
    """The model ``spec`` names, on ``device`` (default: where it loads) in ``dtype`` (a
    ``torch.dtype`` or its name, default: as built or saved).

    ``what`` names the spec in error messages (a command passes its option, e.g. ``"--model"``).
    Raises :class:`LoadError` for a spec that names nothing loadable or that fails to load (its
    message names the spec and the underlying error in one line).
    """
    torch_dtype = None if dtype is None else resolve_dtype(dtype)
    model = _resolve(str(spec), device, what)
    return model if torch_dtype is None else model.to(torch_dtype)


def _resolve(spec: str, device: str | torch.device | None, what: str) -> VisionLanguageModel:
    path = Path(spec).expanduser()
    try:
        if path.is_dir():
            config = path / "config.json"
            if not config.is_file():
                raise LoadError(f"{what} {spec}: the directory has no config.json")
            try:
                data = json.loads(config.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise LoadError(f"{what} {spec}: config.json is not valid JSON ({err})") from None
            if isinstance(data, dict) and "config" in data:
                return VisionLanguageModel.from_pretrained(path, device=device)
            if isinstance(data, dict) and "mm_vision_tower" in data:
                return _load_mgm(path, device)
            raise LoadError(
                f"{what} {spec}: config.json is neither a vlmkit model's nor an official MGM "
                "checkpoint's"
            )
        if path.suffix in (".yaml", ".yml", ".json"):
            if not path.is_file():
                raise LoadError(f"{what} {spec}: no such config file")
            return build(str(path), device=device)
        if spec in presets():
            return build(spec, device=device)
    except LoadError:
        raise
    except _LOAD_ERRORS as err:
        detail = str(err).strip() if isinstance(err, ValueError) else _first_line(err)
        raise LoadError(f"{what} {spec}: cannot load ({type(err).__name__}: {detail})") from None
    if "/" in spec or spec.startswith("."):
        raise LoadError(f"{what} {spec}: no such directory")
    raise LoadError(
        f"{what} {spec}: not a preset, config file or model directory "
        f"(presets: {', '.join(presets())})"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _load_mgm(path: Path, device: str | torch.device | None) -> VisionLanguageModel:
    """The one place that reaches for :mod:`vlmkit.compat.mgm` (absent in a partial install)."""
    try:
        from vlmkit.compat.mgm import load as load_mgm
    except ImportError as err:
        raise LoadError(
            f"{path} is an official MGM checkpoint, but vlmkit.compat.mgm is unavailable ({err})"
        ) from None
    model = load_mgm(path)
    return model if device is None else model.to(device)
