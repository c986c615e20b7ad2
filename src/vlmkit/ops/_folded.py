"""The exact folded form of patch info mining, shared by the ``torch`` and ``triton`` backends.

With ``k_i = W_k LN_k(h_i) + b_k`` and ``v_i = W_v LN_v(h_i) + b_v`` (``LN(h) = γ ⊙ n + β``,
``n = (h - μ) / sqrt(σ² + eps)``), the MGM scores and values fold to

- ``q · k_i / √C = q̃ · n_k,i + c`` with ``q̃ = γ_k ⊙ (W_kᵀ q) / √C`` and
  ``c = q · (W_k β_k + b_k) / √C`` (the same for every pixel of a window);
- ``Σ_i a_i v_i = W_v (γ_v ⊙ p + β_v) + b_v`` with ``p = Σ_i a_i n_v,i`` (``Σ_i a_i = 1``).

So the query is projected once per LR token into HR-channel space and the *normalised* HR vectors
are pooled before one value projection per token. This module holds the folding (which modules
qualify, ``q -> (q̃, c)``, ``p -> mined``), MGM's window layout (:func:`hr_windows`) and the
PyTorch pooling over windows: row by row for large maps, all windows at once for small ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable


@dataclass(frozen=True)
class FoldedProjection:
    """The parts of an ``nn.Sequential(nn.LayerNorm(C_aux), nn.Linear(C_aux, C))`` projection."""

    norm: nn.LayerNorm
    linear: nn.Linear

    @property
    def eps(self) -> float:
        return float(self.norm.eps)

    def affine(self, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The LayerNorm's ``γ`` and ``β`` in ``dtype`` (``None`` where it has none)."""
        gamma, beta = self.norm.weight, self.norm.bias
        return (
            None if gamma is None else gamma.to(dtype),
            None if beta is None else beta.to(dtype),
        )

    def shift(self, dtype: torch.dtype) -> torch.Tensor | None:
        """``W β + b`` (C,): the output for a normalised input of zero, or ``None`` if it is 0."""
        _, beta = self.affine(dtype)
        bias = None if self.linear.bias is None else self.linear.bias.to(dtype)
        if beta is None:
            return bias
        shift = self.linear.weight.to(dtype) @ beta
        return shift if bias is None else shift + bias


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or getattr(module, "_forward_hooks_with_kwargs", None)
    )


def as_folded(projection: nn.Module, in_width: int) -> FoldedProjection | None:
    """``projection``'s LayerNorm and Linear when it is exactly ``Sequential(LayerNorm, Linear)``.

    Only a last-dimension LayerNorm of width ``in_width`` (with or without affine parameters and
    bias) followed by a Linear from ``in_width`` qualifies; subclasses and modules carrying
    forward hooks do not, since their forward may differ from the folded algebra. Returns ``None``
    otherwise.
    """
    if type(projection) is not nn.Sequential or len(projection) != 2:
        return None
    norm, linear = projection[0], projection[1]
    if type(norm) is not nn.LayerNorm or type(linear) is not nn.Linear:
        return None
    if tuple(norm.normalized_shape) != (in_width,) or linear.in_features != in_width:
        return None
    if any(_has_hooks(m) for m in (projection, norm, linear)):
        return None
    return FoldedProjection(norm, linear)


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any tensor is float64, else float32: the precision folded work is done in."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def fold_query(
    q: torch.Tensor, key: FoldedProjection, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the key projection into the query.

    ``q``: (B, N, C) projected queries. Returns ``q_fold`` (B, N, C_aux), with
    ``q_fold · n_i + const`` equal to MGM's ``q · k_i / sqrt(C)`` for the key-normalised HR vector
    ``n_i`` of any pixel of the token's window, and ``const`` (B, N), both in ``dtype``.
    """
    scale = 1.0 / math.sqrt(key.linear.out_features)
    gamma, _ = key.affine(dtype)
    weight = key.linear.weight
    if _half_gemm(q, weight, dtype):  # (B, N, C_aux): W_kᵀ q
        q_fold = _HalfMatmul.apply(q, weight)
    else:
        q_fold = q.to(dtype) @ weight.to(dtype)
    q = q.to(dtype)
    factor = scale if gamma is None else gamma * scale
    if _needs_grad(q, key.linear.weight, key.norm.weight):
        q_fold = q_fold * factor
    else:  # inference: scale in place rather than allocate another (B, N, C_aux)
        q_fold.mul_(factor)
    # The key's constant part W_k β_k + b_k is the same for every pixel; it is kept so the scores
    # equal MGM's before the softmax (and its nan_to_num), not only up to a shift.
    shift = key.shift(dtype)
    const = q.new_zeros(q.shape[:-1]) if shift is None else q @ (shift * scale)
    return q_fold, const


def unfold_values(
    pooled: torch.Tensor, value: FoldedProjection, dtype: torch.dtype
) -> torch.Tensor:
    """``W_v (γ_v ⊙ p + β_v) + b_v`` for pooled normalised HR vectors: (B, N, C_aux) -> (B, N, C).

    Computed in ``dtype`` and returned in the value projection's parameter dtype (as MGM's ``v``).
    ``pooled`` may be overwritten when no gradient is needed.
    """
    gamma, beta = value.affine(dtype)
    x = pooled.to(dtype)
    if _needs_grad(x, value.norm.weight, value.norm.bias):
        x = x if gamma is None else x * gamma
        x = x if beta is None else x + beta
    else:
        x = x if gamma is None else x.mul_(gamma)
        x = x if beta is None else x.add_(beta)
    linear = value.linear
    bias = None if linear.bias is None else linear.bias.to(dtype)
    if linear.weight.dtype == torch.bfloat16 and _half_gemm(linear.weight, linear.weight, dtype):
        out = _SplitLinear.apply(x, linear.weight)
        out = out if bias is None else out + bias
    else:
        out = torch.nn.functional.linear(x, linear.weight.to(dtype), bias)
    return out.to(linear.weight.dtype)


# --- float32 GEMMs on half-precision tensor cores (CUDA) -----------------------------------------
#
# A product of two bfloat16 or float16 numbers is exact in float32, so cuBLAS's half-precision
# GEMM with float32 accumulation and a float32 result (``aten::mm.dtype``) computes the same
# quantity as the float32 GEMM of the up-cast operands, at tensor-core speed. A float32 operand is
# split into two bfloat16 parts ``hi + lo`` (``x - hi - lo`` is below 2**-16 |x|) and multiplied
# part by part. Backward passes stay in float32, as autograd of the up-cast operands would do.


def _half_gemm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether ``a @ b`` in ``dtype`` may run on half-precision tensor cores."""
    return (
        dtype == torch.float32
        and a.is_cuda
        and a.dtype == b.dtype
        and a.dtype in (torch.bfloat16, torch.float16)
        and _has_mm_dtype()
    )


def _has_mm_dtype() -> bool:
    return "dtype" in torch.ops.aten.mm.overloads()


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (..., K) @ b (K, N)`` of half-precision operands, accumulated and returned in float32."""
    out = torch.ops.aten.mm.dtype(a.reshape(-1, a.shape[-1]), b, torch.float32)
    return out.view(*a.shape[:-1], b.shape[-1])


class _HalfMatmul(torch.autograd.Function):
    """``a.float() @ b.float()`` for half-precision ``a`` (..., K) and ``b`` (K, N), in float32."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _mm_f32(a, b)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad = grad.float()
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (grad @ b.float().T).to(a.dtype)
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1, grad.shape[-1])
            grad_b = (a.reshape(-1, a.shape[-1]).float().T @ flat).to(b.dtype)
        return grad_a, grad_b


class _SplitLinear(torch.autograd.Function):
    """``x @ weight.float().T`` for float32 ``x`` (..., K) and a bfloat16 ``weight`` (N, K)."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        hi = x.to(torch.bfloat16)
        lo = (x - hi.float()).to(torch.bfloat16)
        w_t = weight.T
        return _mm_f32(hi, w_t).add_(_mm_f32(lo, w_t))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.float()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ weight.float()
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1, grad.shape[-1])
            grad_w = (flat.T @ x.reshape(-1, x.shape[-1])).to(weight.dtype)
        return grad_x, grad_w


# --- pooling over HR windows, one HR row at a time ----------------------------------------------
#
# The HR rows y*M .. y*M + M - 1 hold the windows of LR row y. In HR row y*M + m, pixel x*M + k
# is pixel i = m*M + k of token x's window. A row is (C_aux, W) with W = side * M; per-pixel
# values of one row are (side, M) per token, of a whole window (side, M*M).


class _Rows:
    """Reusable buffers holding ``slots`` HR rows centred over channels, in ``dtype``."""

    def __init__(self, c_aux: int, window: int, width: int, slots: int, dtype, device) -> None:
        self.c_aux, self.window, self.side = c_aux, window, width // window
        self.centred = torch.empty(c_aux, slots, width, dtype=dtype, device=device)
        self.squares = torch.empty(c_aux, width, dtype=dtype, device=device)
        self.ones = torch.ones(1, c_aux, dtype=dtype, device=device)

    def centre(self, row: torch.Tensor, slot: int = 0) -> torch.Tensor:
        """Store ``row`` (C_aux, W) minus its per-pixel mean in ``slot``.

        Returns the per-pixel biased variance (side, M), computed as LayerNorm's: the mean of
        the squared centred values."""
        centred = self.centred[:, slot]
        if row.dtype == centred.dtype:
            mean = self.ones @ row
        else:  # e.g. bfloat16 features: accumulate in the compute dtype, convert on the fly
            mean = row.sum(0, keepdim=True, dtype=centred.dtype)
        torch.sub(row, mean.div_(self.c_aux), out=centred)
        torch.mul(centred, centred, out=self.squares)
        var = (self.ones @ self.squares).div_(self.c_aux)
        return var.view(self.side, self.window)

    def columns(self, slot: int = 0) -> torch.Tensor:
        """The centred row in ``slot`` as each token's part of it: (side, C_aux, M) view."""
        return self.centred[:, slot].view(self.c_aux, self.side, self.window).transpose(0, 1)

    def dots(self, vectors: torch.Tensor, slot: int = 0) -> torch.Tensor:
        """``vectors[x] · centred pixel`` for token ``x``'s pixels: (side, C_aux) -> (side, M)."""
        return torch.bmm(vectors.unsqueeze(1), self.columns(slot)).squeeze(1)

    def pool_into(self, out: torch.Tensor, weights: torch.Tensor, slot: int = 0) -> None:
        """``out[x] += Σ_k weights[x, k] centred pixel k of x``.

        ``out``: (side, C_aux), ``weights``: (side, M)."""
        out.unsqueeze(1).baddbmm_(weights.unsqueeze(1), self.columns(slot).transpose(1, 2))

    def spread(self, vectors: torch.Tensor, weights: torch.Tensor, out: torch.Tensor) -> None:
        """``out[:, pixel k of x] = Σ_j vectors[x, :, j] weights[x, j, k]`` for one HR row.

        ``vectors``: (side, C_aux, J), ``weights``: (side, J, M), ``out``: (C_aux, W).
        """
        out.view(self.c_aux, self.side, self.window).transpose(0, 1).copy_(vectors @ weights)


def _windows(hr: torch.Tensor, window: int):
    """Yield ``(b, y, strip)`` per batch item and LR row; ``strip`` (C_aux, M, W) is a view."""
    b, _, h, _ = hr.shape
    for bi in range(b):
        for y in range(h // window):
            yield bi, y, hr[bi, :, y * window : (y + 1) * window, :]


def _scores(key_dots: torch.Tensor, const: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(key_dots + const)


class _PoolWindows(torch.autograd.Function):
    """Forward and analytic backward of :func:`pool_windows`; saves only per-pixel scalars."""

    @staticmethod
    def forward(ctx, q_fold, const, hr, window: int, eps_key: float, eps_value: float):
        b, n, c_aux = q_fold.shape
        side = math.isqrt(n)
        rows = _Rows(c_aux, window, hr.shape[-1], 1, q_fold.dtype, hr.device)
        q_rows = q_fold.view(b, side, side, c_aux)
        const_rows = const.view(b, side, side, 1)
        pooled = q_fold.new_zeros(b, side, side, c_aux)
        key_dots = q_fold.new_empty(b, side, side, window, window)  # q_fold · n_k,i
        for bi, y, strip in _windows(hr, window):
            # Online softmax over the window's HR rows: each row is centred, scored and pooled
            # while it is in cache; earlier rows are rescaled when the running maximum grows.
            acc, c = pooled[bi, y], const_rows[bi, y]
            run_max = run_sum = None
            for m in range(window):
                var = rows.centre(strip[:, m])
                dk = rows.dots(q_rows[bi, y]) * torch.rsqrt(var + eps_key)
                key_dots[bi, y, :, m] = dk
                scores = _scores(dk, c)
                row_max = scores.amax(-1, keepdim=True)
                new_max = row_max if run_max is None else torch.maximum(run_max, row_max)
                p = torch.exp(scores - new_max)
                if run_max is None:
                    run_sum = p.sum(-1, keepdim=True)
                else:
                    rescale = torch.exp(run_max - new_max)
                    acc.mul_(rescale)
                    run_sum = run_sum * rescale + p.sum(-1, keepdim=True)
                run_max = new_max
                rows.pool_into(acc, p * torch.rsqrt(var + eps_value))
            acc.div_(run_sum)
        att = _scores(key_dots.view(b, side, side, -1), const_rows).softmax(-1)
        ctx.save_for_backward(q_fold, const, hr, att, key_dots.view(b, n, -1))
        ctx.window, ctx.eps = window, (eps_key, eps_value)
        return pooled.view(b, n, c_aux)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_pooled):
        q_fold, const, hr, att, key_dots = ctx.saved_tensors
        window, (eps_key, eps_value) = ctx.window, ctx.eps
        b, n, c_aux = q_fold.shape
        side = math.isqrt(n)
        grad_rows = grad_pooled.to(q_fold.dtype).reshape(b, side, side, c_aux)
        q_rows = q_fold.view(b, side, side, c_aux)
        const_rows = const.view(b, side, side, 1)
        key_dots = key_dots.view(b, side, side, -1)
        need_hr = ctx.needs_input_grad[2]
        rows = _Rows(c_aux, window, hr.shape[-1], window, q_fold.dtype, hr.device)
        grad_q = torch.zeros_like(q_rows)
        grad_const = const.new_empty(b, side, side)
        grad_hr = torch.empty_like(hr) if need_hr else None
        grad_row = rows.squares.new_empty(c_aux, hr.shape[-1]) if need_hr else None
        for bi, y, strip in _windows(hr, window):
            gp, q = grad_rows[bi, y], q_rows[bi, y]
            # Pass 1: centre the window's rows (kept for pass 2) and e_i = grad · centred_i.
            var = torch.cat([rows.centre(strip[:, m], m) for m in range(window)], dim=1)
            e = torch.cat([rows.dots(gp, m) for m in range(window)], dim=1)  # (side, M*M)
            rstd_key, rstd_value = torch.rsqrt(var + eps_key), torch.rsqrt(var + eps_value)
            a, dk = att[bi, y], key_dots[bi, y]
            da = rstd_value * e
            ds = a * (da - (a * da).sum(-1, keepdim=True))
            ds = ds * torch.isfinite(dk + const_rows[bi, y])  # nan_to_num passes finite grads only
            grad_const[bi, y] = ds.sum(-1)
            # Pass 2: dq = Σ_i ds_i rstd_k,i centred_i and, when asked, the LayerNorm backward of
            # both normalisations per pixel: dh_i = α_i (q - mean q) + β_i (g - mean g) - γ_i c_i.
            u = (ds * rstd_key).view(side, window, window)
            for m in range(window):
                rows.pool_into(grad_q[bi, y], u[:, m], m)
            if need_hr:
                alpha, beta = rstd_key * ds, rstd_value * a
                gamma = (rstd_key**2 * ds * dk + rstd_value**3 * a * e) / c_aux
                vectors = torch.stack(
                    [q - q.mean(-1, keepdim=True), gp - gp.mean(-1, keepdim=True)], dim=-1
                )  # (side, C_aux, 2)
                weights = torch.stack([alpha, beta], dim=1).view(side, 2, window, window)
                gamma = gamma.view(side, window, window)
                for m in range(window):
                    rows.spread(vectors, weights[:, :, m], grad_row)
                    grad_row.sub_(rows.centred[:, m] * gamma[:, m].reshape(1, -1))
                    grad_hr[bi, :, y * window + m, :] = grad_row
        return grad_q.view(b, n, c_aux), grad_const.view(b, n), grad_hr, None, None, None


# --- pooling over HR windows, all at once (small maps) ---------------------------------------------

BATCHED_MAX_ELEMENTS = 1 << 24
"""HR maps of at most this many elements (B * C_aux * H * W) are pooled by
:func:`pool_windows_batched`: it holds a few copies of the map, and at such sizes it is several
times faster than the row loop, whose cost there is Python overhead (e.g. MGM's miner at
16 x 112 x 64 x 64). Larger maps (MGM: 2880 x 192 x 192 per image) take the row loop."""


def hr_windows(hr: torch.Tensor, side: int) -> torch.Tensor:
    """MGM's window layout: ``hr`` (B, C_aux, H, W) -> (B, side*side, M*M, C_aux), ``M = H / side``.

    Windows and the pixels inside each window are in raster (row-major) order.
    """
    b, c_aux, h, w = hr.shape
    window = h // side
    x = hr.permute(0, 2, 3, 1).reshape(b, side, window, side, window, c_aux)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, side * side, window * window, c_aux)


def pool_windows_batched(
    q_fold: torch.Tensor,
    const: torch.Tensor,
    hr: torch.Tensor,
    window: int,
    eps_key: float,
    eps_value: float,
) -> torch.Tensor:
    """:func:`pool_windows` for all windows at once, differentiated by autograd.

    Same arguments and result, each image's independent of the rest of the batch; memory: a few
    (B, N, M*M, C_aux) tensors in ``q_fold``'s dtype.
    The centred HR vectors and their variances carry no graph unless ``hr`` requires a gradient.
    """
    side = math.isqrt(q_fold.shape[1])
    with torch.set_grad_enabled(torch.is_grad_enabled() and hr.requires_grad):
        pixels = hr_windows(hr.to(q_fold.dtype), side)  # (B, N, M*M, C_aux), a copy
        centred = pixels - pixels.mean(-1, keepdim=True)
        var = centred.square().mean(-1)  # (B, N, M*M): LayerNorm's biased variance
    # Products and sums rather than batched GEMVs: each image's result is then the same whatever
    # the batch around it (a GEMV's blocking, and so its round-off, varies with the batch size).
    scores = (centred * q_fold[:, :, None]).sum(-1) * torch.rsqrt(var + eps_key)
    att = _scores(scores, const[..., None]).softmax(-1)
    return ((att * torch.rsqrt(var + eps_value))[..., None] * centred).sum(2)


def pool_windows(
    q_fold: torch.Tensor,
    const: torch.Tensor,
    hr: torch.Tensor,
    window: int,
    eps_key: float,
    eps_value: float,
) -> torch.Tensor:
    """Attention-pool each LR token's HR window of normalised vectors, in PyTorch.

    Args:
        q_fold: (B, N, C_aux) and ``const``: (B, N) from :func:`fold_query`, in the compute dtype.
        hr: (B, C_aux, H, W), any float dtype and strides, ``H = W = sqrt(N) * window``.
        window: M, the side of each token's HR window.
        eps_key, eps_value: the key and value LayerNorms' eps.

    Returns:
        (B, N, C_aux) in ``q_fold``'s dtype: for token ``t`` with window pixels ``h_i`` (raster
        order), ``p_t = Σ_i a_i n_v,i`` with
        ``a = softmax(nan_to_num(q_fold_t · n_k,i + const_t))``
        and ``n_k``/``n_v`` the pixels normalised over channels with the key/value eps.

    The forward pass visits the HR map one HR row at a time (centred into a reused buffer, scored
    and pooled with an online softmax while it is in cache), so its working memory is one HR row;
    it saves only per-pixel scalars, and the backward pass recomputes the centred rows.
    Maps of at most :data:`BATCHED_MAX_ELEMENTS` elements are pooled by
    :func:`pool_windows_batched` instead (same result, faster there).
    Differentiable with respect to ``q_fold``, ``const`` and ``hr``.
    """
    if hr.numel() <= BATCHED_MAX_ELEMENTS:
        return pool_windows_batched(q_fold, const, hr, window, eps_key, eps_value)
    return _PoolWindows.apply(q_fold, const, hr, window, eps_key, eps_value)
