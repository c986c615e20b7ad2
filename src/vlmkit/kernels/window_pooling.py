"""Fused Triton kernels for the folded patch info mining (the ``"triton"`` backend).

One program per LR token ``t`` walks its M×M window of the HR map (any float dtype, any strides:
channels-first or channels-last) in *chunks* of P pixels of one window row. A chunk is loaded
whole, every channel at once, into registers (as two power-of-two channel pieces, 2048 + 1024
for MGM's 2880 channels), so each HR value is read from memory once. Per chunk, in fp32:

- the pixels' LayerNorm statistics and key dots ``q̃ · n_k,i`` from the shifted sums ``Σd``,
  ``Σd²`` and ``Σ q̃ d`` over channels, ``d = h - s`` (``s`` = the pixel's first channel, which
  keeps the one-pass variance accurate when the mean is large);
- the scores ``q̃ · n_k,i + c``, ``nan_to_num``, and an online softmax across chunks (running
  maximum and sum; the pooled accumulators are rescaled when the maximum grows);
- the pooled normalised vector ``p += Σ_i w_i (d_i - (μ_i - s_i))``, ``w_i = exp(·) rstd_v,i``.

The value projection of ``p`` stays in PyTorch (one GEMM). The backward kernel reads the window
once as well: the softmax term ``A = Σ_j a_j ∂a_j`` is only needed at the end, since
``∂q̃ = X - A Y`` with ``X``, ``Y`` accumulated per chunk (see the kernel); only the gradient of
the HR map, when asked, needs ``A`` per pixel and a first pass to compute it (each pixel belongs
to one window, so no atomics).

``TRITON_INTERPRET=1`` set before this module is imported runs the kernels in Triton's CPU
interpreter (used by the tests); otherwise the tensors must be on a CUDA device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

_FLT_MAX = tl.constexpr(3.4028234663852886e38)  # largest finite float32

# Widest HR map (channels) the kernels hold in registers; wider maps need the "torch" backend.
MAX_CHANNELS = 16384


@triton.jit
def _load_chunk(hr_ptr, base, j, stride_h, stride_w, chan_a, chan_b, b_ok,
                M: tl.constexpr, P: tl.constexpr, KB: tl.constexpr,
                HAS_B: tl.constexpr, EVEN_P: tl.constexpr):  # fmt: skip
    """Chunk ``j`` of a window (pixels ``k0 .. k0 + P - 1`` of window row ``m``): the pixels'
    positions ``m * M + k`` (raster order), the mask of real pixels, their first-channel values
    ``s`` (P,) and their channels as two pieces (CA, P) and (CB, P).

    Masked lanes (pixels past M, channels past C) read as ``s``, so that ``h - s`` is 0 there."""
    m = j // KB
    k = (j % KB) * P + tl.arange(0, P)
    valid = k < M
    pixels = base + m * stride_h + k * stride_w
    if EVEN_P:
        s = tl.load(hr_ptr + pixels)
        h_a = tl.load(hr_ptr + chan_a[:, None] + pixels[None, :])
    else:
        s = tl.load(hr_ptr + pixels, mask=valid, other=0.0)
        h_a = tl.load(hr_ptr + chan_a[:, None] + pixels[None, :], mask=valid[None, :],
                      other=s[None, :])  # fmt: skip
    if HAS_B:
        h_b = tl.load(hr_ptr + chan_b[:, None] + pixels[None, :],
                      mask=b_ok[:, None] & valid[None, :], other=s[None, :])  # fmt: skip
    else:
        h_b = s[None, :]  # unused
    return m * M + k, valid, s, h_a, h_b


@triton.jit
def _stats(s, h_a, h_b, vec_a, vec_b, vec_sum, C, eps_key, eps_value, HAS_B: tl.constexpr):
    """Per pixel of a chunk: ``d = h - s`` (both pieces), ``μ - s``, both rstd and
    ``vec · (h - μ)`` from the shifted sums ``Σd``, ``Σd²``, ``Σ vec d``."""
    shift = s.to(tl.float32)
    d_a = h_a.to(tl.float32) - shift[None, :]
    s1 = tl.sum(d_a, axis=0)
    s2 = tl.sum(d_a * d_a, axis=0)
    sv = tl.sum(vec_a[:, None] * d_a, axis=0)
    if HAS_B:
        d_b = h_b.to(tl.float32) - shift[None, :]
        s1 += tl.sum(d_b, axis=0)
        s2 += tl.sum(d_b * d_b, axis=0)
        sv += tl.sum(vec_b[:, None] * d_b, axis=0)
    else:
        d_b = d_a  # unused
    mean_off = s1 / C  # μ - s
    var = tl.maximum(s2 / C - mean_off * mean_off, 0.0)
    rstd_key = 1.0 / tl.sqrt(var + eps_key)
    rstd_value = 1.0 / tl.sqrt(var + eps_value)
    return d_a, d_b, mean_off, rstd_key, rstd_value, sv - mean_off * vec_sum


@triton.jit
def _scores(key_dots, const, valid):
    """MGM's scores after ``nan_to_num`` (NaN -> 0, ±inf -> ±FLT_MAX); -inf past the window."""
    scores = key_dots + const
    scores = tl.where(scores != scores, 0.0, scores)
    scores = tl.minimum(tl.maximum(scores, -_FLT_MAX), _FLT_MAX)
    return tl.where(valid, scores, float("-inf"))


@triton.jit
def _mining_fwd_kernel(
    hr_ptr, q_ptr, const_ptr, pooled_ptr, dots_ptr,
    N, C, SIDE,
    stride_b, stride_c, stride_h, stride_w,
    eps_key, eps_value,
    M: tl.constexpr, P: tl.constexpr, KB: tl.constexpr, CA: tl.constexpr, CB: tl.constexpr,
    HAS_B: tl.constexpr, EVEN_P: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    n = t % N
    hr_ptr += (t // N).to(tl.int64) * stride_b
    base = (n // SIDE) * M * stride_h + (n % SIDE) * M * stride_w
    row = t.to(tl.int64) * C
    ca = tl.arange(0, CA)
    cb = CA + tl.arange(0, CB)
    b_ok = cb < C
    chan_a = ca * stride_c
    chan_b = cb * stride_c
    q_a = tl.load(q_ptr + row + ca)
    q_sum = tl.sum(q_a, axis=0)
    if HAS_B:
        q_b = tl.load(q_ptr + row + cb, mask=b_ok, other=0.0)
        q_sum += tl.sum(q_b, axis=0)
    else:
        q_b = q_a  # unused
    const = tl.load(const_ptr + t)
    dots_row = dots_ptr + t.to(tl.int64) * (M * M)

    # Online softmax over the chunks: running maximum and sum; the pooled accumulators
    # Σ w_i (h_i - s_i) and Σ w_i (μ_i - s_i) are rescaled when the maximum grows.
    run_max = float("-inf")
    run_sum = 0.0
    acc_mean = 0.0
    acc_a = tl.zeros([CA], dtype=tl.float32)
    acc_b = tl.zeros([CB], dtype=tl.float32)
    for j in range(M * KB):
        pos, valid, s, h_a, h_b = _load_chunk(hr_ptr, base, j, stride_h, stride_w, chan_a,
                                              chan_b, b_ok, M, P, KB, HAS_B, EVEN_P)  # fmt: skip
        d_a, d_b, mean_off, rstd_key, rstd_value, qc = _stats(
            s, h_a, h_b, q_a, q_b, q_sum, C, eps_key, eps_value, HAS_B
        )
        key_dots = qc * rstd_key  # q̃ · n_k,i
        tl.store(dots_row + pos, key_dots, mask=valid)
        scores = _scores(key_dots, const, valid)
        new_max = tl.maximum(run_max, tl.max(scores, axis=0))
        rescale = tl.exp(run_max - new_max)
        e = tl.exp(scores - new_max)
        run_sum = run_sum * rescale + tl.sum(e, axis=0)
        run_max = new_max
        w = e * rstd_value
        acc_mean = acc_mean * rescale + tl.sum(w * mean_off, axis=0)
        acc_a = acc_a * rescale + tl.sum(w[None, :] * d_a, axis=1)
        if HAS_B:
            acc_b = acc_b * rescale + tl.sum(w[None, :] * d_b, axis=1)

    inv = 1.0 / run_sum
    tl.store(pooled_ptr + row + ca, (acc_a - acc_mean) * inv)
    if HAS_B:
        tl.store(pooled_ptr + row + cb, (acc_b - acc_mean) * inv, mask=b_ok)


@triton.jit
def _mining_bwd_kernel(
    hr_ptr, q_ptr, const_ptr, dots_ptr, grad_ptr,
    grad_q_ptr, grad_const_ptr, grad_hr_ptr,
    N, C, SIDE,
    stride_b, stride_c, stride_h, stride_w,
    gstride_b, gstride_c, gstride_h, gstride_w,
    eps_key, eps_value,
    M: tl.constexpr, P: tl.constexpr, KB: tl.constexpr, CA: tl.constexpr, CB: tl.constexpr,
    HAS_B: tl.constexpr, EVEN_P: tl.constexpr,
    NEED_HR: tl.constexpr, PP: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    n = t % N
    hr_ptr += (t // N).to(tl.int64) * stride_b
    base = (n // SIDE) * M * stride_h + (n % SIDE) * M * stride_w
    row = t.to(tl.int64) * C
    ca = tl.arange(0, CA)
    cb = CA + tl.arange(0, CB)
    b_ok = cb < C
    chan_a = ca * stride_c
    chan_b = cb * stride_c
    g_a = tl.load(grad_ptr + row + ca)
    g_sum = tl.sum(g_a, axis=0)
    if HAS_B:
        g_b = tl.load(grad_ptr + row + cb, mask=b_ok, other=0.0)
        g_sum += tl.sum(g_b, axis=0)
    else:
        g_b = g_a  # unused
    const = tl.load(const_ptr + t)
    dots_row = dots_ptr + t.to(tl.int64) * (M * M)
    # The window's softmax, from the forward's key dots.
    window = tl.arange(0, PP)
    all_scores = _scores(tl.load(dots_row + window, mask=window < M * M, other=0.0), const,
                         window < M * M)  # fmt: skip
    att_max = tl.max(all_scores, axis=0)
    att_inv = 1.0 / tl.sum(tl.exp(all_scores - att_max), axis=0)

    # With ∂a_i = rstd_v,i g · (h_i - μ_i), kept_i = a_i where the score was finite (nan_to_num
    # passes only those gradients) and A = Σ_j a_j ∂a_j: ∂s_i = kept_i (∂a_i - A),
    # ∂c = Σ kept ∂a - A Σ kept, ∂q̃ = X - A Y with X = Σ kept ∂a rstd_k (h - μ),
    # Y = Σ kept rstd_k (h - μ): one pass, and exactly 0 for a one-pixel window.
    if NEED_HR:
        # ∂h_i needs A while pixel i is at hand: a first pass computes it.
        grad_hr_ptr += (t // N).to(tl.int64) * gstride_b
        gbase = (n // SIDE) * M * gstride_h + (n % SIDE) * M * gstride_w
        gchan_a = ca * gstride_c
        gchan_b = cb * gstride_c
        q_a = tl.load(q_ptr + row + ca)
        q_b = tl.load(q_ptr + row + cb, mask=b_ok, other=0.0)
        q_mean = (tl.sum(q_a, axis=0) + tl.sum(q_b, axis=0)) / C
        q_c_a = q_a - q_mean  # q̃ - mean q̃ and g - mean g
        g_c_a = g_a - g_sum / C
        q_c_b = q_b - q_mean
        g_c_b = g_b - g_sum / C
        att_dots_first = 0.0
        for j in range(M * KB):
            pos, valid, s, h_a, h_b = _load_chunk(
                hr_ptr, base, j, stride_h, stride_w, chan_a, chan_b, b_ok, M, P, KB, HAS_B, EVEN_P
            )
            d_a, d_b, mean_off, rstd_key, rstd_value, e = _stats(
                s, h_a, h_b, g_a, g_b, g_sum, C, eps_key, eps_value, HAS_B
            )
            key_dots = tl.load(dots_row + pos, mask=valid, other=0.0)
            att = tl.exp(_scores(key_dots, const, valid) - att_max) * att_inv
            att_dots_first += tl.sum(att * (rstd_value * e), axis=0)

    att_dots = 0.0  # A
    kept_dots = 0.0  # Σ kept ∂a
    kept_sum = 0.0
    x_a = tl.zeros([CA], dtype=tl.float32)
    y_a = tl.zeros([CA], dtype=tl.float32)
    x_b = tl.zeros([CB], dtype=tl.float32)
    y_b = tl.zeros([CB], dtype=tl.float32)
    for j in range(M * KB):
        pos, valid, s, h_a, h_b = _load_chunk(hr_ptr, base, j, stride_h, stride_w, chan_a,
                                              chan_b, b_ok, M, P, KB, HAS_B, EVEN_P)  # fmt: skip
        d_a, d_b, mean_off, rstd_key, rstd_value, e = _stats(
            s, h_a, h_b, g_a, g_b, g_sum, C, eps_key, eps_value, HAS_B
        )  # e_i = g · (h_i - μ_i)
        key_dots = tl.load(dots_row + pos, mask=valid, other=0.0)
        raw = key_dots + const
        att = tl.exp(_scores(key_dots, const, valid) - att_max) * att_inv
        d_att = rstd_value * e
        kept = tl.where((raw == raw) & (tl.abs(raw) < float("inf")) & valid, att, 0.0)
        att_dots += tl.sum(att * d_att, axis=0)
        kept_dots += tl.sum(kept * d_att, axis=0)
        kept_sum += tl.sum(kept, axis=0)
        weight = kept * rstd_key
        c_a = d_a - mean_off[None, :]  # h - μ
        ya = weight[None, :] * c_a
        y_a += tl.sum(ya, axis=1)
        x_a += tl.sum(d_att[None, :] * ya, axis=1)
        if HAS_B:
            c_b = d_b - mean_off[None, :]
            yb = weight[None, :] * c_b
            y_b += tl.sum(yb, axis=1)
            x_b += tl.sum(d_att[None, :] * yb, axis=1)
        if NEED_HR:
            # ∂h_i = α_i (q̃ - mean q̃) + β_i (g - mean g) - γ_i (h_i - μ_i)
            d_scores = kept * (d_att - att_dots_first)
            alpha = d_scores * rstd_key
            beta = rstd_value * att
            gamma = rstd_key * rstd_key * d_scores * key_dots + rstd_value * rstd_value * beta * e
            gamma = gamma / C
            gpixels = gbase + (pos // M) * gstride_h + (pos % M) * gstride_w
            dh_a = alpha[None, :] * q_c_a[:, None] + beta[None, :] * g_c_a[:, None]
            dh_a -= gamma[None, :] * c_a
            tl.store(grad_hr_ptr + gchan_a[:, None] + gpixels[None, :],
                     dh_a.to(grad_hr_ptr.dtype.element_ty), mask=valid[None, :])  # fmt: skip
            if HAS_B:
                dh_b = alpha[None, :] * q_c_b[:, None] + beta[None, :] * g_c_b[:, None]
                dh_b -= gamma[None, :] * c_b
                tl.store(grad_hr_ptr + gchan_b[:, None] + gpixels[None, :],
                         dh_b.to(grad_hr_ptr.dtype.element_ty),
                         mask=b_ok[:, None] & valid[None, :])  # fmt: skip

    tl.store(grad_const_ptr + t, kept_dots - att_dots * kept_sum)
    tl.store(grad_q_ptr + row + ca, x_a - att_dots * y_a)
    if HAS_B:
        tl.store(grad_q_ptr + row + cb, x_b - att_dots * y_b, mask=b_ok)


def interpreted() -> bool:
    """Whether the kernels were built for Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return type(_mining_fwd_kernel).__name__ == "InterpretedFunction"


# Tiles per (kernel, element size of the HR map): at most this many HR values (chunk pixels ×
# padded channels) per chunk, on at most this many warps. Measured on an H100 at MGM's shapes
# (C_aux = 2880, M = 8: chunks of 4 pixels on 8 warps for the bf16 forward, 8 pixels on 16 warps
# for the fp32 forward and the bf16 backward, 4 pixels on 16 warps for the fp32 backward); no
# configuration tried used prefetching or software pipelining with profit. Tests lower the sizes
# to run several chunks per window row.
TILES = {
    ("forward", 2): (12288, 8),
    ("forward", 4): (24576, 16),
    ("backward", 2): (24576, 16),
    ("backward", 4): (12288, 16),
}


@dataclass(frozen=True)
class Tiling:
    """How a window is split: chunks of ``pixels`` (of one window row) × all channels, held as
    two power-of-two channel pieces ``piece_a + piece_b`` (``piece_b`` 0 when C is one)."""

    pixels: int
    row_chunks: int
    piece_a: int
    piece_b: int
    num_warps: int

    def constexprs(self, window: int) -> dict:
        return dict(
            M=window, P=self.pixels, KB=self.row_chunks, CA=self.piece_a,
            CB=max(self.piece_b, 1), HAS_B=self.piece_b > 0, EVEN_P=window % self.pixels == 0,
            num_warps=self.num_warps, num_stages=1,
        )  # fmt: skip


def tiling(kernel: str, channels: int, window: int, element_size: int) -> Tiling:
    """The chunking of an M×M window (``window`` = M) of ``channels``-wide pixels for
    ``kernel`` (``"forward"`` or ``"backward"``) on an HR map of ``element_size`` bytes."""
    if channels > MAX_CHANNELS:
        raise ValueError(
            f"the 'triton' backend supports HR maps of up to {MAX_CHANNELS} channels, got "
            f"{channels}; use backend='torch'"
        )
    piece_a = 1 << (channels.bit_length() - 1)  # largest power of two <= channels
    rest = channels - piece_a
    piece_b = triton.next_power_of_2(rest) if rest else 0
    width = piece_a + piece_b
    budget, max_warps = TILES[kernel, 2 if element_size <= 2 else 4]
    pixels = min(triton.next_power_of_2(window), max(1, budget // width))
    pixels = 1 << (pixels.bit_length() - 1)
    warps = min(max_warps, max(1, triton.next_power_of_2(width * pixels // 768)))
    return Tiling(pixels, -(-window // pixels), piece_a, piece_b, warps)


def _check_device(*tensors: torch.Tensor) -> None:
    device = tensors[0].device
    if device.type != "cuda" and not interpreted():
        raise RuntimeError(
            f"the 'triton' backend runs on CUDA tensors, got device {device}; set "
            "TRITON_INTERPRET=1 before vlmkit.kernels.window_pooling is imported to run it in Triton's "
            "CPU interpreter"
        )
    for t in tensors[1:]:
        if t.device != device:
            raise ValueError(f"tensors on different devices: {device} and {t.device}")


def _check_extent(x: torch.Tensor) -> None:
    """The kernels address one batch item of the HR map with int32 offsets."""
    extent = sum((size - 1) * stride for size, stride in zip(x.shape[1:], x.stride()[1:]))
    if extent >= 2**31:
        raise ValueError(f"one HR map of the batch spans {extent} elements, more than 2**31 - 1")


class _PoolWindowsTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_fold, const, hr, window: int, eps_key: float, eps_value: float):
        _check_device(q_fold, const, hr)
        _check_extent(hr)
        b, n, c_aux = q_fold.shape
        side = math.isqrt(n)
        q = q_fold.detach().float().contiguous()
        c = const.detach().float().contiguous()
        pooled = torch.empty_like(q)
        dots = q.new_empty(b, n, window * window)
        tiles = tiling("forward", c_aux, window, hr.element_size())
        _mining_fwd_kernel[(b * n,)](
            hr, q, c, pooled, dots,
            n, c_aux, side,
            *hr.stride(),
            float(eps_key), float(eps_value),
            **tiles.constexprs(window),
        )  # fmt: skip
        ctx.save_for_backward(q, c, hr, dots)
        ctx.window, ctx.eps, ctx.dtype = window, (float(eps_key), float(eps_value)), q_fold.dtype
        return pooled.to(q_fold.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_pooled):
        q, c, hr, dots = ctx.saved_tensors
        b, n, c_aux = q.shape
        side = math.isqrt(n)
        window = ctx.window
        grad = grad_pooled.float().contiguous()
        need_hr = ctx.needs_input_grad[2]
        grad_q = torch.empty_like(q)
        grad_const = torch.empty_like(c)
        grad_hr = torch.empty_like(hr) if need_hr else hr.new_empty(0)
        if need_hr:
            _check_extent(grad_hr)
        gstrides = grad_hr.stride() if need_hr else (0, 0, 0, 0)
        tiles = tiling("backward", c_aux, window, hr.element_size())
        _mining_bwd_kernel[(b * n,)](
            hr, q, c, dots, grad,
            grad_q, grad_const, grad_hr,
            n, c_aux, side,
            *hr.stride(), *gstrides,
            ctx.eps[0], ctx.eps[1],
            NEED_HR=need_hr, PP=triton.next_power_of_2(window * window),
            **tiles.constexprs(window),
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
        hr: (B, C_aux, H, W) HR map, any float dtype and strides, ``H = W = sqrt(N) * window``,
            ``C_aux <= MAX_CHANNELS``.
        window: M; eps_key, eps_value: the key and value LayerNorms' eps.

    Returns:
        (B, N, C_aux) pooled normalised HR vectors in ``q_fold``'s dtype, computed in fp32.
        Differentiable with respect to ``q_fold``, ``const`` and ``hr``.
    """
    return _PoolWindowsTriton.apply(q_fold, const, hr, window, eps_key, eps_value)
