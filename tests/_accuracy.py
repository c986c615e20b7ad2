"""Accuracy checks for the mining backends: a float32 result against the float64 reference.

Float32 round-off differs between orders of computation, so a backend is compared with the
reference's own error (both measured against float64) and, where the problem is ill-conditioned,
with the rounding sensitivity: how far the exact result moves when the inputs are perturbed at
float32's unit round-off. A LayerNorm over two channels is such a case: its Jacobian scales with
one over the difference of the two values, so any order of computation may lose digits there
that the reference happens to keep.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

UNIT_ROUNDOFF = 2.0**-24  # float32


def in_float64(
    lr: torch.Tensor, hr: torch.Tensor, projections: Sequence[nn.Module]
) -> tuple[torch.Tensor, torch.Tensor, list[nn.Module]]:
    return lr.double(), hr.double(), [copy.deepcopy(p).double() for p in projections]


def perturbed_float64(
    lr: torch.Tensor, hr: torch.Tensor, projections: Sequence[nn.Module], seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[nn.Module]]:
    """The case in float64 with every input and parameter scaled by ``1 + u * N(0, 1)``
    (``u`` = float32's unit round-off)."""
    gen = torch.Generator().manual_seed(seed)

    def nudge(x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device)
        return x * (1 + UNIT_ROUNDOFF * noise)

    lr, hr, projections = in_float64(lr, hr, projections)
    with torch.no_grad():
        for proj in projections:
            for p in proj.parameters():
                p.copy_(nudge(p))
    return nudge(lr), nudge(hr), projections


def rounding_sensitivity(
    run: Callable[..., list[torch.Tensor]],
    case: tuple[torch.Tensor, torch.Tensor, Sequence[nn.Module]],
    exact: Sequence[torch.Tensor],
    draws: int = 3,
) -> list[float]:
    """Per tensor of ``run(*case)`` (outputs and gradients, computed in float64): the largest
    change from ``exact`` over ``draws`` perturbations of the inputs at float32's round-off."""
    worst = [0.0] * len(exact)
    for seed in range(draws):
        moved = run(*perturbed_float64(*case, seed))
        worst = [max(w, (m - e).abs().max().item()) for w, m, e in zip(worst, moved, exact)]
    return worst


def assert_as_accurate(
    got: Sequence[torch.Tensor],
    reference: Sequence[torch.Tensor],
    exact: Sequence[torch.Tensor],
    sensitivity: Sequence[float] | None = None,
    factor: float = 4.0,
    sensitivity_factor: float = 10.0,
    atol: float = 1e-5,
) -> None:
    """Each tensor of ``got`` is within ``factor`` times the reference's own error against
    ``exact`` (the float64 reference), plus ``sensitivity_factor`` times its rounding
    sensitivity (:func:`rounding_sensitivity`, when given), plus ``atol`` relative to its scale.

    A float32 computation of a few dozen roundings may be off by several times what rounding
    its inputs alone does; a wrong formula is off by orders of magnitude more.
    """
    sensitivity = sensitivity or [0.0] * len(exact)
    for i, (g, r, e, s) in enumerate(zip(got, reference, exact, sensitivity)):
        assert g.dtype == r.dtype, f"[{i}] dtype {g.dtype} != reference dtype {r.dtype}"
        err_got = (g.double() - e).abs().max().item()
        err_ref = (r.double() - e).abs().max().item()
        bound = factor * err_ref + sensitivity_factor * s + atol * (1.0 + e.abs().max().item())
        assert err_got <= bound, (
            f"[{i}] error {err_got:.3g} > {bound:.3g} (reference {err_ref:.3g}, rounding "
            f"sensitivity {s:.3g})"
        )
