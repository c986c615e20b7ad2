"""Fused Triton kernels for the folded patch info mining (the ``"triton"`` backend).

One program per LR token ``t`` walks its M×M window of the HR map (any float dtype, any strides:
channels-first or channels-last) in blocks of channels, accumulating in fp32:

- pass 1: per pixel ``i``, shifted sums ``Σ(h - s)``, ``Σ(h - s)²`` and ``Σ q̃ (h - s)`` (the
  shift ``s`` is the pixel's first channel, which keeps the one-pass variance accurate); from
  them the LayerNorm statistics, the scores ``q̃ · n_k,i + c``, ``nan_to_num`` and the softmax ``a``;
- pass 2: the pooled normalised vector ``p = Σ_i a_i n_v,i`` (C_aux values per token).

The value projection of ``p`` stays in PyTorch (one small GEMM). The backward kernel repeats the
two passes with the incoming gradient and writes the gradients of ``q̃``, ``c`` and, when asked,
of the HR map (each pixel belongs to one window, so no atomics). Pass 2 re-reads the window; on
a GPU the second read is served from L2 when the window is still resident.

``TRITON_INTERPRET=1`` set before this module is imported runs the kernels in Triton's CPU
interpreter (used by the tests); otherwise the tensors must be on a CUDA device.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

_FLT_MAX = tl.constexpr(3.4028234663852886e38)  # largest finite float32


@triton.jit
def _pixel_offsets(
    t, N, SIDE, stride_b, stride_h, stride_w, M: tl.constexpr, BLOCK_P: tl.constexpr
):
    """Offsets of token ``t``'s window pixels (raster order) and the mask of real pixels."""
    b = t // N
    n = t % N
    y = n // SIDE
    x = n % SIDE
    i = tl.arange(0, BLOCK_P)
    valid = i < M * M
    row = y * M + i // M
    col = x * M + i % M
    offsets = b.to(tl.int64) * stride_b + row.to(tl.int64) * stride_h + col.to(tl.int64) * stride_w
    return offsets, valid


@triton.jit
def _window_stats(
    hr_ptr, vec_ptr, offsets, valid, shift, C, stride_c,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Pass 1 over channels: shifted sums Σd, Σd², Σ v·d per pixel (d = h - shift) and Σ v."""
    s1 = tl.zeros([BLOCK_P], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_P], dtype=tl.float32)
    vd = tl.zeros([BLOCK_P], dtype=tl.float32)
    vsum = tl.zeros([BLOCK_C], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        cmask = cc < C
        mask = valid[:, None] & cmask[None, :]
        ptrs = hr_ptr + offsets[:, None] + cc[None, :].to(tl.int64) * stride_c
        h = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, h - shift[:, None], 0.0)
        v = tl.load(vec_ptr + cc, mask=cmask, other=0.0)
        s1 += tl.sum(d, axis=1)
        s2 += tl.sum(d * d, axis=1)
        vd += tl.sum(d * v[None, :], axis=1)
        vsum += v
    return s1, s2, vd, tl.sum(vsum, axis=0)


@triton.jit
def _mining_fwd_kernel(
    hr_ptr, q_ptr, const_ptr, pooled_ptr, att_ptr, dots_ptr,
    N, C, SIDE,
    stride_b, stride_c, stride_h, stride_w,
    eps_key, eps_value,
    M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    offsets, valid = _pixel_offsets(t, N, SIDE, stride_b, stride_h, stride_w, M, BLOCK_P)
    shift = tl.load(hr_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    q_row = q_ptr + t.to(tl.int64) * C
    s1, s2, qd, qsum = _window_stats(
        hr_ptr, q_row, offsets, valid, shift, C, stride_c, BLOCK_P, BLOCK_C
    )
    mean_off = s1 / C  # mean - shift
    var = tl.maximum(s2 / C - mean_off * mean_off, 0.0)
    rstd_key = 1.0 / tl.sqrt(var + eps_key)
    rstd_value = 1.0 / tl.sqrt(var + eps_value)
    key_dots = (qd - mean_off * qsum) * rstd_key  # q̃ · n_k,i
    scores = key_dots + tl.load(const_ptr + t)
    scores = tl.where(scores != scores, 0.0, scores)  # nan_to_num
    scores = tl.minimum(tl.maximum(scores, -_FLT_MAX), _FLT_MAX)
    scores = tl.where(valid, scores, float("-inf"))
    att = tl.exp(scores - tl.max(scores, axis=0))
    att = att / tl.sum(att, axis=0)
    i = tl.arange(0, BLOCK_P)
    tl.store(att_ptr + t.to(tl.int64) * (M * M) + i, att, mask=valid)
    tl.store(dots_ptr + t.to(tl.int64) * (M * M) + i, key_dots, mask=valid)

    weights = att * rstd_value
    weighted_mean = tl.sum(weights * mean_off, axis=0)
    out_row = pooled_ptr + t.to(tl.int64) * C
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        cmask = cc < C
        mask = valid[:, None] & cmask[None, :]
        ptrs = hr_ptr + offsets[:, None] + cc[None, :].to(tl.int64) * stride_c
        h = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, h - shift[:, None], 0.0)
        pooled = tl.sum(weights[:, None] * d, axis=0) - weighted_mean
        tl.store(out_row + cc, pooled, mask=cmask)


@triton.jit
def _mining_bwd_kernel(
    hr_ptr, q_ptr, const_ptr, att_ptr, dots_ptr, grad_ptr,
    grad_q_ptr, grad_const_ptr, grad_hr_ptr,
    N, C, SIDE,
    stride_b, stride_c, stride_h, stride_w,
    gstride_b, gstride_c, gstride_h, gstride_w,
    eps_key, eps_value,
    M: tl.constexpr, NEED_HR: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    offsets, valid = _pixel_offsets(t, N, SIDE, stride_b, stride_h, stride_w, M, BLOCK_P)
    shift = tl.load(hr_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    row = t.to(tl.int64) * C
    s1, s2, gd, gsum = _window_stats(
        hr_ptr, grad_ptr + row, offsets, valid, shift, C, stride_c, BLOCK_P, BLOCK_C
    )
    mean_off = s1 / C
    var = tl.maximum(s2 / C - mean_off * mean_off, 0.0)
    rstd_key = 1.0 / tl.sqrt(var + eps_key)
    rstd_value = 1.0 / tl.sqrt(var + eps_value)
    e = gd - mean_off * gsum  # grad · centred_i

    i = tl.arange(0, BLOCK_P)
    att = tl.load(att_ptr + t.to(tl.int64) * (M * M) + i, mask=valid, other=0.0)
    key_dots = tl.load(dots_ptr + t.to(tl.int64) * (M * M) + i, mask=valid, other=0.0)
    d_att = rstd_value * e
    d_scores = att * (d_att - tl.sum(att * d_att, axis=0))
    scores = key_dots + tl.load(const_ptr + t)
    finite = (scores == scores) & (tl.abs(scores) < float("inf"))
    d_scores = tl.where(finite & valid, d_scores, 0.0)  # nan_to_num passes finite grads only
    tl.store(grad_const_ptr + t, tl.sum(d_scores, axis=0))

    # dq̃ = Σ_i u_i centred_i;  dh_i = α_i (q̃ - mean q̃) + β_i (g - mean g) - γ_i centred_i
    u = d_scores * rstd_key
    u_mean = tl.sum(u * mean_off, axis=0)
    alpha = u
    beta = rstd_value * att
    gamma = (rstd_key * rstd_key * d_scores * key_dots + rstd_value * rstd_value * beta * e) / C
    if NEED_HR:
        q_mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            q_mean += tl.load(q_ptr + row + cc, mask=cc < C, other=0.0)
        q_mean_value = tl.sum(q_mean, axis=0) / C
        grad_mean = gsum / C
        goffsets, _ = _pixel_offsets(t, N, SIDE, gstride_b, gstride_h, gstride_w, M, BLOCK_P)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        cmask = cc < C
        mask = valid[:, None] & cmask[None, :]
        ptrs = hr_ptr + offsets[:, None] + cc[None, :].to(tl.int64) * stride_c
        h = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        centred = tl.where(mask, h - shift[:, None] - mean_off[:, None], 0.0)
        grad_q = tl.sum(u[:, None] * (h - shift[:, None]), axis=0) - u_mean
        tl.store(grad_q_ptr + row + cc, grad_q, mask=cmask)
        if NEED_HR:
            q = tl.load(q_ptr + row + cc, mask=cmask, other=0.0) - q_mean_value
            g = tl.load(grad_ptr + row + cc, mask=cmask, other=0.0) - grad_mean
            dh = alpha[:, None] * q[None, :] + beta[:, None] * g[None, :]
            dh -= gamma[:, None] * centred
            gptrs = grad_hr_ptr + goffsets[:, None] + cc[None, :].to(tl.int64) * gstride_c
            tl.store(gptrs, dh.to(grad_hr_ptr.dtype.element_ty), mask=mask)


def interpreted() -> bool:
    """Whether the kernels were built for Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return type(_mining_fwd_kernel).__name__ == "InterpretedFunction"


# Largest channel block; tests lower it to exercise the channel loops at small sizes.
MAX_BLOCK_C = 128


def _blocks(pixels: int) -> tuple[int, int, int]:
    """(BLOCK_P, BLOCK_C, num_warps): a window's pixels by up to 2048 / BLOCK_P channels.

    At MGM's M = 8 this is a 64 × 32 tile on 4 warps; ptxas (sm_90) reports 167 registers for
    the forward and 219 for the backward kernel there, without spills (64-channel tiles spill).
    """
    block_p = triton.next_power_of_2(pixels)
    block_c = max(16, min(MAX_BLOCK_C, 2048 // block_p))
    num_warps = 4 if block_p * block_c <= 2048 else 8
    return block_p, block_c, num_warps


def _check_device(*tensors: torch.Tensor) -> None:
    device = tensors[0].device
    if device.type != "cuda" and not interpreted():
        raise RuntimeError(
            f"the 'triton' backend runs on CUDA tensors, got device {device}; set "
            "TRITON_INTERPRET=1 before vlmkit.kernels.mining is imported to run it in Triton's "
            "CPU interpreter"
        )
    for t in tensors[1:]:
        if t.device != device:
            raise ValueError(f"tensors on different devices: {device} and {t.device}")


class _PoolWindowsTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_fold, const, hr, window: int, eps_key: float, eps_value: float):
        _check_device(q_fold, const, hr)
        b, n, c_aux = q_fold.shape
        side = math.isqrt(n)
        pixels = window * window
        q = q_fold.detach().float().contiguous()
        c = const.detach().float().contiguous()
        pooled = torch.empty_like(q)
        att = q.new_empty(b, n, pixels)
        dots = torch.empty_like(att)
        block_p, block_c, warps = _blocks(pixels)
        _mining_fwd_kernel[(b * n,)](
            hr, q, c, pooled, att, dots,
            n, c_aux, side,
            *hr.stride(),
            float(eps_key), float(eps_value),
            M=window, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=warps,
        )  # fmt: skip
        ctx.save_for_backward(q, c, hr, att, dots)
        ctx.window, ctx.eps, ctx.dtype = window, (float(eps_key), float(eps_value)), q_fold.dtype
        return pooled.to(q_fold.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_pooled):
        q, c, hr, att, dots = ctx.saved_tensors
        b, n, c_aux = q.shape
        side = math.isqrt(n)
        window = ctx.window
        pixels = window * window
        grad = grad_pooled.float().contiguous()
        need_hr = ctx.needs_input_grad[2]
        grad_q = torch.empty_like(q)
        grad_const = torch.empty_like(c)
        grad_hr = torch.empty_like(hr) if need_hr else hr.new_empty(0)
        gstrides = grad_hr.stride() if need_hr else (0, 0, 0, 0)
        block_p, block_c, warps = _blocks(pixels)
        _mining_bwd_kernel[(b * n,)](
            hr, q, c, att, dots, grad,
            grad_q, grad_const, grad_hr,
            n, c_aux, side,
            *hr.stride(), *gstrides,
            ctx.eps[0], ctx.eps[1],
            M=window, NEED_HR=need_hr, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=warps,
        )  # fmt: skip
        return (
            grad_q.to(ctx.dtype),
            grad_const.to(ctx.dtype),
            grad_hr if need_hr else None,
            None,
            None,
            None,
        )


def pool_windows_triton(
    q_fold: torch.Tensor,
    const: torch.Tensor,
    hr: torch.Tensor,
    window: int,
    eps_key: float,
    eps_value: float,
) -> torch.Tensor:
    """Triton version of :func:`vlmkit.ops._folded.pool_windows` (same arguments and result).

    Args:
        q_fold: (B, N, C_aux) folded queries; ``const``: (B, N) score offsets.
        hr: (B, C_aux, H, W) HR map, any float dtype and strides, ``H = W = sqrt(N) * window``.
        window: M; eps_key, eps_value: the key and value LayerNorms' eps.

    Returns:
        (B, N, C_aux) pooled normalised HR vectors in ``q_fold``'s dtype, computed in fp32.
        Differentiable with respect to ``q_fold``, ``const`` and ``hr``.
    """
    return _PoolWindowsTriton.apply(q_fold, const, hr, window, eps_key, eps_value)
