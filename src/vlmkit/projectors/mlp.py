"""Projectors from visual-token width to the LLM's embedding width: ``linear`` and ``mlpNx_gelu``.

``mlp2x_gelu`` is LLaVA-1.5's and Mini-Gemini's projector: ``Linear(C, D), GELU, Linear(D, D)``. The
modules are indexed like MGM's ``mm_projector`` (``0`` and ``2`` are the Linear layers), so official
checkpoints map onto them key for key.
"""

from __future__ import annotations

from typing import Any

from torch import nn

import vlmkit
from vlmkit.interfaces import Projector, ProjectorInfo


def _check_dims(name: str, in_dim: int, out_dim: int) -> None:
    for key, value in (("in_dim", in_dim), ("out_dim", out_dim)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"projector {name!r}: {key} must be a positive int, got {value!r}")


@vlmkit.register("projector", "linear")
class LinearProjector(nn.Sequential, Projector):
    """One Linear layer: ``(B, T, in_dim) -> (B, T, out_dim)``."""

    tiny_config = {"in_dim": 8, "out_dim": 16}

    def __init__(self, in_dim: int, out_dim: int) -> None:
        _check_dims("linear", in_dim, out_dim)
        super().__init__(nn.Linear(in_dim, out_dim))

    @classmethod
    def describe(cls, in_dim: int, out_dim: int, **_: Any) -> ProjectorInfo:
        _check_dims("linear", in_dim, out_dim)
        return ProjectorInfo(in_dim, out_dim)


class MLPGeluProjector(nn.Sequential, Projector):
    """``depth`` Linear layers with GELU between: ``(B, T, in_dim) -> (B, T, out_dim)``."""

    tiny_config = {"in_dim": 8, "out_dim": 16}
    default_depth = 2

    def __init__(self, in_dim: int, out_dim: int, depth: int | None = None) -> None:
        depth = self.default_depth if depth is None else depth
        _check_dims(f"mlp{depth}x_gelu", in_dim, out_dim)
        if depth < 1:
            raise ValueError(f"projector mlpNx_gelu: depth must be >= 1, got {depth}")
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        super().__init__(*layers)

    @classmethod
    def describe(cls, in_dim: int, out_dim: int, **_: Any) -> ProjectorInfo:
        _check_dims("mlpNx_gelu", in_dim, out_dim)
        return ProjectorInfo(in_dim, out_dim)


@vlmkit.register("projector", "mlp2x_gelu")
class MLP2xGelu(MLPGeluProjector):
    """LLaVA-1.5 / MGM projector: ``Linear, GELU, Linear``."""

    default_depth = 2


@vlmkit.register("projector", "mlp3x_gelu")
class MLP3xGelu(MLPGeluProjector):
    """Three Linear layers with GELU between."""

    default_depth = 3
