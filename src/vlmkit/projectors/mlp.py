"""Projectors from visual-token width to the LLM's embedding width: ``linear`` and ``mlpNx_gelu``.

``mlp2x_gelu`` is LLaVA-1.5's and Mini-Gemini's projector: ``Linear(C, D), GELU, Linear(D, D)``. The
modules are indexed like MGM's ``mm_projector`` (``0`` and ``2`` are the Linear layers), so official
checkpoints map onto them key for key.

``pos_embed_grid`` (all projectors here, default off) adds learned 2-D position embeddings to the
output tokens: a row embedding plus a column embedding for a ``G x G`` token grid, so that a small
LLM can tie a place named in text ("row 2, column 3") to the visual token there. Off, the module
and its state dict are exactly LLaVA's / MGM's.

``zero_init_last`` (default off; timm's name for the same idea in residual blocks) starts the last
Linear layer at zero, so the projector first hands the LLM all-zero visual tokens. Stage 1 trains
the projector into a frozen LLM; random visual tokens at its start can disturb the frozen LLM's
attention over the text (position-based readouts, such as reading a grid out token by token,
then never start learning), while zeros leave it as it was. The parameters and their keys are the
same either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlmkit.interfaces import Projector, ProjectorInfo, config_of
from vlmkit.registry import register


def _check_dims(name: str, in_dim: int, out_dim: int) -> None:
    for key, value in (("in_dim", in_dim), ("out_dim", out_dim)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"projector {name!r}: {key} must be a positive int, got {value!r}")


def _check_grid(name: str, grid: int | None) -> None:
    if grid is not None and (not isinstance(grid, int) or isinstance(grid, bool) or grid < 1):
        raise ValueError(
            f"projector {name!r}: pos_embed_grid must be a positive int or None, got {grid!r}"
        )


def _check_zero_init(name: str, zero_init_last: bool) -> None:
    if not isinstance(zero_init_last, bool):
        raise ValueError(
            f"projector {name!r}: zero_init_last must be True or False, got {zero_init_last!r}"
        )


def _check_common(name: str, config: dict[str, Any]) -> None:
    """The checks every projector here makes of its (whole) config."""
    _check_dims(name, config["in_dim"], config["out_dim"])
    _check_grid(name, config["pos_embed_grid"])
    _check_zero_init(name, config["zero_init_last"])


class _GridPositions(nn.Module):
    """Learned row and column embeddings of a ``grid x grid`` token layout, raster order."""

    def __init__(self, grid: int, dim: int) -> None:
        super().__init__()
        self.grid = grid
        self.row = nn.Parameter(torch.zeros(grid, dim))
        self.column = nn.Parameter(torch.zeros(grid, dim))
        nn.init.normal_(self.row, std=0.02)
        nn.init.normal_(self.column, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: ``(B, grid*grid, D)``, raster order -> the same plus row + column."""
        if tokens.shape[1] != self.grid * self.grid:
            raise ValueError(
                f"pos_embed_grid={self.grid} expects {self.grid * self.grid} tokens per view, "
                f"got {tokens.shape[1]}"
            )
        pos = (self.row[:, None, :] + self.column[None, :, :]).reshape(-1, self.row.shape[1])
        return tokens + pos.to(tokens.dtype)


class _Positioned(nn.Sequential):
    """A Sequential projector with this module's options: :class:`_GridPositions` added after its
    layers, the last Linear started at zero."""

    def _zero_last(self, zero_init_last: bool) -> None:
        if zero_init_last:
            last = [layer for layer in self if isinstance(layer, nn.Linear)][-1]
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def _add_positions(self, grid: int | None, dim: int) -> None:
        # Kept outside the Sequential's numbered layers so that keys 0, 2... stay MGM's.
        self.pos_embed = _GridPositions(grid, dim) if grid is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if layer is not self.pos_embed:
                x = layer(x)
        return x if self.pos_embed is None else self.pos_embed(x)


@register("projector", "linear")
class LinearProjector(_Positioned, Projector):
    """One Linear layer: ``(B, T, in_dim) -> (B, T, out_dim)``.

    ``pos_embed_grid``: add learned row + column embeddings for a ``G x G`` token grid;
    ``zero_init_last``: start the layer at zero (module doc).
    """

    tiny_config = {"in_dim": 8, "out_dim": 16}

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        pos_embed_grid: int | None = None,
        zero_init_last: bool = False,
    ) -> None:
        self.describe(in_dim=in_dim, out_dim=out_dim, pos_embed_grid=pos_embed_grid,
                      zero_init_last=zero_init_last)  # fmt: skip
        super().__init__(nn.Linear(in_dim, out_dim))
        self._add_positions(pos_embed_grid, out_dim)
        self._zero_last(zero_init_last)

    @classmethod
    def describe(cls, **kwargs: Any) -> ProjectorInfo:
        """Checks every keyword argument the constructor takes; ``ProjectorInfo(in_dim, out_dim)``."""
        c = config_of(cls, kwargs)
        _check_common("linear", c)
        return ProjectorInfo(c["in_dim"], c["out_dim"])


class MLPGeluProjector(_Positioned, Projector):
    """``depth`` Linear layers with GELU between: ``(B, T, in_dim) -> (B, T, out_dim)``.

    ``depth``: default the class's (2 for ``mlp2x_gelu``, 3 for ``mlp3x_gelu``);
    ``pos_embed_grid``: add learned row + column embeddings for a ``G x G`` token grid;
    ``zero_init_last``: start the last Linear at zero (module doc).
    """

    tiny_config = {"in_dim": 8, "out_dim": 16}
    default_depth = 2

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int | None = None,
        pos_embed_grid: int | None = None,
        zero_init_last: bool = False,
    ) -> None:
        self.describe(in_dim=in_dim, out_dim=out_dim, depth=depth, pos_embed_grid=pos_embed_grid,
                      zero_init_last=zero_init_last)  # fmt: skip
        depth = self.default_depth if depth is None else depth
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        super().__init__(*layers)
        self._add_positions(pos_embed_grid, out_dim)
        self._zero_last(zero_init_last)

    @classmethod
    def describe(cls, **kwargs: Any) -> ProjectorInfo:
        """Checks every keyword argument the constructor takes, ``depth`` included;
        ``ProjectorInfo(in_dim, out_dim)``."""
        c = config_of(cls, kwargs)
        depth = cls.default_depth if c["depth"] is None else c["depth"]
        name = f"mlp{depth}x_gelu"
        _check_common(name, c)
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"projector {name!r}: depth must be an int >= 1, got {depth!r}")
        return ProjectorInfo(c["in_dim"], c["out_dim"])


@register("projector", "mlp2x_gelu")
class MLP2xGelu(MLPGeluProjector):
    """LLaVA-1.5 / MGM projector: ``Linear, GELU, Linear``."""

    default_depth = 2


@register("projector", "mlp3x_gelu")
class MLP3xGelu(MLPGeluProjector):
    """Three Linear layers with GELU between."""

    default_depth = 3
