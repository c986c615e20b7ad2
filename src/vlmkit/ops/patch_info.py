"""Mini-Gemini's patch info mining as one functional op with interchangeable backends.

``patch_info_mining(lr, hr, query_proj, key_proj, value_proj, backend=...)`` returns
``lr + mined`` exactly as MGM defines it (docs/architecture.md). Backends:

- ``"reference"``: the literal MGM computation (every HR pixel projected to keys and values);
- ``"torch"``: the exact folded shortcut in PyTorch (see :mod:`vlmkit.ops._folded`);
- ``"triton"``: the folded shortcut with fused Triton kernels
  (:mod:`vlmkit.kernels.window_pooling`);
- ``"auto"``: ``"triton"`` for CUDA tensors when Triton is importable (and the HR map has at most
  :data:`vlmkit.kernels.window_pooling.MAX_CHANNELS` channels), ``"torch"`` otherwise.

The folded backends need the key and value projections to be exactly
``nn.Sequential(nn.LayerNorm(C_aux), nn.Linear(C_aux, C))``; other modules use the reference path.
"""

from __future__ import annotations

import importlib.util
import math

import torch
from torch import nn

from vlmkit.ops import _folded
from vlmkit.ops._folded import hr_windows

BACKENDS: tuple[str, ...] = ("auto", "reference", "torch", "triton")
__all__ = ["BACKENDS", "hr_windows", "mining_reference", "patch_info_mining", "resolve_backend"]


def mining_reference(
    lr: torch.Tensor,
    hr: torch.Tensor,
    query_proj: nn.Module,
    key_proj: nn.Module,
    value_proj: nn.Module,
) -> torch.Tensor:
    """The literal MGM computation: ``lr`` (B, N, C), ``hr`` (B, C_aux, H, W) -> (B, N, C)."""
    side = math.isqrt(lr.shape[1])
    windows = hr_windows(hr, side)  # (B, N, M*M, C_aux)
    q = query_proj(lr)  # (B, N, C)
    k = key_proj(windows)  # (B, N, M*M, C)
    v = value_proj(windows)  # (B, N, M*M, C)
    att = q[:, :, None] @ (k.transpose(-1, -2) / k.shape[-1] ** 0.5)  # (B, N, 1, M*M)
    att = att.nan_to_num()
    mined = (att.softmax(-1) @ v).mean(2)  # (B, N, C)
    return lr + mined


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _width(module: nn.Module, end: str) -> int | None:
    """The input (``end="in"``) or output (``end="out"``) width of simple projections, else None."""
    if isinstance(module, nn.Sequential) and len(module) > 0:
        return _width(module[0] if end == "in" else module[-1], end)
    if isinstance(module, nn.Linear):
        return module.in_features if end == "in" else module.out_features
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return int(module.normalized_shape[0])
    return None


def _check_inputs(
    lr: torch.Tensor,
    hr: torch.Tensor,
    query_proj: nn.Module,
    key_proj: nn.Module,
    value_proj: nn.Module,
) -> None:
    if lr.dim() != 3:
        raise ValueError(f"lr must be (B, N, C), got shape {tuple(lr.shape)}")
    if hr.dim() != 4:
        raise ValueError(f"hr must be (B, C_aux, H, W), got shape {tuple(hr.shape)}")
    b, n, c = lr.shape
    hb, c_aux, h, w = hr.shape
    side = math.isqrt(n)
    if side * side != n or n == 0:
        raise ValueError(f"lr must have a square number of tokens N, got N={n}")
    if h != w:
        raise ValueError(f"hr must be square (H == W), got H={h}, W={w}")
    if h % side != 0 or h == 0:
        raise ValueError(
            f"hr side H={h} must be a positive multiple of the LR grid side sqrt(N)={side} (N={n})"
        )
    if hb != b:
        raise ValueError(f"batch mismatch: lr has B={b}, hr has B={hb}")
    expected = [
        ("query_proj", "in", c, "lr channels C"),
        ("key_proj", "in", c_aux, "hr channels C_aux"),
        ("value_proj", "in", c_aux, "hr channels C_aux"),
        ("value_proj", "out", c, "lr channels C (the residual adds lr)"),
    ]
    modules = {"query_proj": query_proj, "key_proj": key_proj, "value_proj": value_proj}
    for name, end, want, what in expected:
        got = _width(modules[name], end)
        if got is not None and got != want:
            raise ValueError(f"{name} {end}put width is {got}, expected {want} = {what}")
    q_out, k_out = _width(query_proj, "out"), _width(key_proj, "out")
    if q_out is not None and k_out is not None and q_out != k_out:
        raise ValueError(
            f"query_proj output width {q_out} must equal key_proj output width {k_out}"
        )


def resolve_backend(
    backend: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    channels: int | None = None,
) -> str:
    """The backend ``backend`` runs as for tensors on ``device`` (``"auto"`` resolved).

    ``"auto"`` is ``"triton"`` for CUDA tensors when Triton is importable, except in float64
    (the kernels accumulate in float32) and for HR maps of more than
    :data:`vlmkit.kernels.window_pooling.MAX_CHANNELS` ``channels`` (wider than the kernels hold in
    registers), and ``"torch"`` otherwise. Unknown names raise ``ValueError`` listing the valid
    ones.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown patch_info_mining backend {backend!r}; expected one of {BACKENDS}"
        )
    if backend != "auto":
        return backend
    if device.type == "cuda" and dtype != torch.float64 and _triton_available():
        from vlmkit.kernels.window_pooling import MAX_CHANNELS

        if channels is None or channels <= MAX_CHANNELS:
            return "triton"
    return "torch"


def patch_info_mining(
    lr: torch.Tensor,
    hr: torch.Tensor,
    query_proj: nn.Module,
    key_proj: nn.Module,
    value_proj: nn.Module,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """MGM patch info mining: each LR token attends over its M×M window of HR features.

    Args:
        lr: (B, N, C) LR tokens, ``N`` a perfect square (MGM: 576 × 1024).
        hr: (B, C_aux, H, W) HR feature map with ``H = W = sqrt(N) * M`` (MGM: 2880 × 192 × 192).
        query_proj: maps (…, C) -> (…, C); MGM: ``Sequential(LayerNorm(C), Linear(C, C))``.
        key_proj, value_proj: map (…, C_aux) -> (…, C); MGM: ``Sequential(LayerNorm(C_aux),
            Linear(C_aux, C))``.
        backend: ``"auto"``, ``"reference"``, ``"torch"`` or ``"triton"``.

    Returns:
        (B, N, C): ``lr + mean_2(softmax(nan_to_num(q k^T / sqrt(C))) v)`` as MGM computes it,
        with the residual adding the raw ``lr``.

    Raises:
        ValueError: for shapes that do not fit (naming the values) or an unknown backend.
    """
    channels = hr.shape[1] if hr.dim() == 4 else None  # bad shapes are named by _check_inputs
    resolved = resolve_backend(backend, lr.device, _folded.compute_dtype(lr, hr), channels)
    _check_inputs(lr, hr, query_proj, key_proj, value_proj)
    if resolved == "reference":
        return mining_reference(lr, hr, query_proj, key_proj, value_proj)
    c_aux = hr.shape[1]
    key = _folded.as_folded(key_proj, c_aux)
    value = _folded.as_folded(value_proj, c_aux)
    if key is None or value is None:
        return mining_reference(lr, hr, query_proj, key_proj, value_proj)

    window = hr.shape[-1] // math.isqrt(lr.shape[1])
    dtype = _folded.compute_dtype(lr, hr, key.linear.weight, value.linear.weight)
    q = query_proj(lr)  # (B, N, C); under autocast in its precision, like the reference
    # The folded work picks its own precision (float32 accumulation, in-place buffers), so it runs
    # outside any autocast region, which would otherwise recast its matmuls to bf16/fp16.
    with torch.autocast(lr.device.type, enabled=False):
        q_fold, const = _folded.fold_query(q, key, dtype)  # (B, N, C_aux), (B, N)
        if resolved == "triton":
            try:
                from vlmkit.kernels.window_pooling import pool_windows_triton
            except ImportError as err:
                raise RuntimeError(f"the 'triton' backend needs the triton package: {err}") from err
            pooled = pool_windows_triton(q_fold, const, hr, window, key.eps, value.eps)
        else:
            pooled = _folded.pool_windows(q_fold, const, hr, window, key.eps, value.eps)
        mined = _folded.unfold_values(pooled, value, dtype)  # (B, N, C)
    return lr + mined
