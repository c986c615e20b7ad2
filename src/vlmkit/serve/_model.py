"""The one place the serving commands resolve a model spec (preset, config file, saved directory or
official MGM release) to a model, and the name the API reports for it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


def load_served_model(spec: str, *, device: str | None = None) -> Any:
    """The model ``spec`` names, in eval mode; a spec that cannot load ends the command with its
    :class:`vlmkit.loading.LoadError` on one line (status 2)."""
    from vlmkit.loading import LoadError, load

    try:
        return load(spec, device=device, what="MODEL").eval()
    except LoadError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)


def model_id(model: Any, spec: str) -> str:
    """The name ``GET /v1/models`` lists: the config's name, else the spec's last part."""
    name = getattr(model.config, "name", None)
    return name or Path(spec.rstrip("/")).name or spec
