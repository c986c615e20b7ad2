"""Accuracy checks for the mining backends: a float32 result against the float64 reference.

Float32 round-off differs between orders of computation, so a backend is compared with the
reference's own error (both measured against float64) plus a multiple of the case's *rounding
sensitivity*: how far the exact result moves under perturbations of the size float32 rounding
makes. Two kinds are modelled, both in float64:

- every input and parameter scaled by ``1 + u * N(0, 1)`` (``u`` = float32's unit round-off);
- inside each LayerNorm, the two steps whose float32 error depends on the case's conditioning
  rather than on the size of the result: centring ``x`` loses ``u * max|x|`` before the division
  by ``σ = sqrt(var + eps)`` (so the normalised output moves by ``u * max|x| / σ``), and the input
  gradient ``(g - mean(g) - n * mean(g * n)) / σ`` is a difference of terms that can cancel almost
  exactly (a LayerNorm over two channels has an input gradient near zero, made of terms of size
  ``|g| / σ``), so it moves by ``u`` times the size of those terms.

A wrong formula is off by orders of magnitude more than any of these; a well-conditioned case
keeps the bound close to the reference's own error.
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


class _RoundedNormalize(torch.autograd.Function):
    """``(x - mean) / sqrt(var + eps)`` over the last dim, in float64, plus noise of the size
    float32 rounding has in the centring (forward) and in the cancelling terms (backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        rstd = torch.rsqrt(centred.square().mean(-1, keepdim=True) + eps)
        n = centred * rstd
        ctx.save_for_backward(n, rstd)
        ctx.gen = gen
        lost = UNIT_ROUNDOFF * x.abs().amax(-1, keepdim=True) * rstd
        return n + lost * _noise(n, gen)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        n, rstd = ctx.saved_tensors
        terms = (g, g.mean(-1, keepdim=True), n * (g * n).mean(-1, keepdim=True))
        dx = rstd * (terms[0] - terms[1] - terms[2])
        size = rstd * sum(t.abs() for t in terms)
        return dx + UNIT_ROUNDOFF * size * _noise(dx, ctx.gen), None, None


def _noise(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device)


class RoundedLayerNorm(nn.Module):
    """A float64 stand-in for an ``nn.LayerNorm`` (same parameters) whose normalisation carries
    float32-sized rounding noise (:class:`_RoundedNormalize`)."""

    def __init__(self, norm: nn.LayerNorm, gen: torch.Generator) -> None:
        super().__init__()
        self.weight, self.bias, self.eps, self.gen = norm.weight, norm.bias, norm.eps, gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = _RoundedNormalize.apply(x, self.eps, self.gen)
        n = n if self.weight is None else n * self.weight
        return n if self.bias is None else n + self.bias


def perturbed_float64(
    lr: torch.Tensor, hr: torch.Tensor, projections: Sequence[nn.Module], seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[nn.Module]]:
    """The case in float64 with every input and parameter scaled by ``1 + u * N(0, 1)``
    (``u`` = float32's unit round-off) and every LayerNorm replaced by a
    :class:`RoundedLayerNorm` with the same parameters."""
    gen = torch.Generator().manual_seed(seed)

    def nudge(x: torch.Tensor) -> torch.Tensor:
        return x * (1 + UNIT_ROUNDOFF * _noise(x, gen))

    lr, hr, projections = in_float64(lr, hr, projections)
    with torch.no_grad():
        for proj in projections:
            for p in proj.parameters():
                p.copy_(nudge(p))
    for proj in projections:
        for name, module in list(proj.named_children()):
            if isinstance(module, nn.LayerNorm):
                setattr(proj, name, RoundedLayerNorm(module, gen))
    return nudge(lr), nudge(hr), projections


def rounding_sensitivity(
    run: Callable[..., list[torch.Tensor]],
    case: tuple[torch.Tensor, torch.Tensor, Sequence[nn.Module]],
    exact: Sequence[torch.Tensor],
    draws: int = 3,
) -> list[float]:
    """Per tensor of ``run(*case)`` (outputs and gradients, computed in float64): the largest
    change from ``exact`` over ``draws`` float32-sized perturbations (:func:`perturbed_float64`)."""
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
