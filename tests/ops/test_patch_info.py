"""``vlmkit.ops.patch_info_mining``: the reference against a restatement of MGM's formula, every
backend against the reference (outputs and gradients), fallbacks and error messages."""

from __future__ import annotations

import functools
import math
from unittest import mock

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from tests._accuracy import assert_as_accurate, in_float64, rounding_sensitivity
from vlmkit.ops import patch_info_mining
from vlmkit.ops import _folded
from vlmkit.ops._folded import as_folded, pool_windows
from vlmkit.ops.patch_info import hr_windows, resolve_backend


def projection(
    in_dim: int,
    out_dim: int,
    *,
    eps: float = 1e-5,
    affine: bool = True,
    norm_bias: bool = True,
    linear_bias: bool = True,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> nn.Sequential:
    """``Sequential(LayerNorm, Linear)`` with random (non-default) LayerNorm parameters."""
    gen = torch.Generator().manual_seed(seed)
    proj = nn.Sequential(
        nn.LayerNorm(in_dim, eps=eps, elementwise_affine=affine, bias=norm_bias),
        nn.Linear(in_dim, out_dim, bias=linear_bias),
    )
    with torch.no_grad():
        for p in proj.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if p.dim() == 1 else 0.0))
    return proj.to(dtype)


def restated(lr, hr, query_proj, key_proj, value_proj):
    """MGM's patch info mining restated with explicit loops: token (y, x) attends over HR pixels
    (y*M + m, x*M + k) in raster order, scores q·k/sqrt(C), nan_to_num, softmax, residual."""
    b, n, _ = lr.shape
    side = math.isqrt(n)
    window = hr.shape[-1] // side
    out = lr.clone()
    for bi in range(b):
        for y in range(side):
            for x in range(side):
                t = y * side + x
                q = query_proj(lr[bi, t])
                pixels = [
                    hr[bi, :, y * window + m, x * window + k]
                    for m in range(window)
                    for k in range(window)
                ]
                keys = torch.stack([key_proj(h) for h in pixels])
                values = torch.stack([value_proj(h) for h in pixels])
                scores = torch.nan_to_num(keys @ q / math.sqrt(keys.shape[-1]))
                out[bi, t] = lr[bi, t] + torch.softmax(scores, 0) @ values
    return out


def outputs_and_grads(backend, lr, hr, projections, seed=1):
    """The op's output and the gradients of a random linear loss w.r.t. lr, hr and all params."""
    for proj in projections:
        proj.zero_grad(set_to_none=True)
    lr = lr.detach().clone().requires_grad_(True)
    hr = hr.detach().clone().requires_grad_(True)
    out = patch_info_mining(lr, hr, *projections, backend=backend)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    (out * weight).sum().backward()
    grads = [lr.grad, hr.grad]
    for proj in projections:
        grads += [torch.zeros_like(p) if p.grad is None else p.grad for p in proj.parameters()]
    return [out.detach()] + grads


def assert_all_close(got, want, rtol, atol):
    for i, (g, w) in enumerate(zip(got, want)):
        scale = 1.0 + w.abs().max().item()
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol * scale, msg=lambda m: f"[{i}] {m}")


@st.composite
def cases(draw, max_side=3, max_window=4, max_channels=12, min_channels=1):
    """Shapes and projection variants: (B, side, M, C, C_aux) and LayerNorm/Linear options."""
    return dict(
        batch=draw(st.integers(1, 2)),
        side=draw(st.integers(1, max_side)),
        window=draw(st.integers(1, max_window)),
        lr_dim=draw(st.integers(2, 8)),
        hr_dim=draw(st.integers(min_channels, max_channels)),
        eps=(draw(st.sampled_from([1e-5, 1e-3])), draw(st.sampled_from([1e-5, 0.1]))),
        affine=draw(st.booleans()),
        norm_bias=draw(st.booleans()),
        linear_bias=draw(st.booleans()),
        offset=draw(st.sampled_from([0.0, 20.0])),
        channels_last=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


cases_default = dict(
    batch=2, side=2, window=2, lr_dim=4, hr_dim=6, eps=(1e-5, 1e-5), affine=True,
    norm_bias=True, linear_bias=True, offset=0.0, channels_last=False, seed=0,
)  # fmt: skip


def build(case, dtype):
    gen = torch.Generator().manual_seed(case["seed"])
    b, side, window = case["batch"], case["side"], case["window"]
    c, c_aux = case["lr_dim"], case["hr_dim"]
    opts = dict(
        affine=case["affine"],
        norm_bias=case["norm_bias"],
        linear_bias=case["linear_bias"],
        dtype=dtype,
    )
    projections = (
        projection(c, c, seed=case["seed"], dtype=dtype),
        projection(c_aux, c, eps=case["eps"][0], seed=case["seed"] + 1, **opts),
        projection(c_aux, c, eps=case["eps"][1], seed=case["seed"] + 2, **opts),
    )
    lr = torch.randn(b, side * side, c, generator=gen).to(dtype)
    hr = torch.randn(b, c_aux, side * window, side * window, generator=gen) + case["offset"]
    hr = hr.to(dtype)
    if case["channels_last"]:
        hr = hr.to(memory_format=torch.channels_last)
    return lr, hr, projections


# --- the reference against MGM's formula ------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(case=cases(max_side=3, max_window=3, max_channels=6))
def test_reference_matches_restatement_of_design(case):
    lr, hr, projections = build(case, torch.float64)
    with torch.no_grad():
        got = patch_info_mining(lr, hr, *projections, backend="reference")
        want = restated(lr, hr, *projections)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_hr_windows_are_raster_order():
    side, window, c_aux = 2, 3, 2
    hr = torch.arange(c_aux * 36, dtype=torch.float64).reshape(1, c_aux, 6, 6)
    windows = hr_windows(hr, side)  # (1, 4, 9, 2)
    for y in range(side):
        for x in range(side):
            for m in range(window):
                for k in range(window):
                    pixel = hr[0, :, y * window + m, x * window + k]
                    assert torch.equal(windows[0, y * side + x, m * window + k], pixel)


def test_reference_residual_adds_raw_lr_and_means_over_a_size_one_dim():
    # With zero value projections the mined part vanishes and the output is exactly lr.
    lr, hr, (q, k, v) = build(dict(cases_default, seed=3), torch.float64)
    with torch.no_grad():
        v[1].weight.zero_()
        v[1].bias.zero_()
    out = patch_info_mining(lr, hr, q, k, v, backend="reference")
    assert torch.equal(out, lr)


# --- the folded "torch" backend against the reference --------------------------------------------

# The torch backend pools small maps in one batched pass and large ones row by row; every test
# of it runs both paths, forced through the size threshold.
PATHS = {"batched": 1 << 62, "rows": -1}


def pooling(path: str):
    return mock.patch.object(_folded, "BATCHED_MAX_ELEMENTS", PATHS[path])



@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=100, deadline=None)
@given(case=cases())
def test_torch_backend_matches_reference_float64(path, case):
    lr, hr, projections = build(case, torch.float64)
    with pooling(path):
        got = outputs_and_grads("torch", lr, hr, projections)
    want = outputs_and_grads("reference", lr, hr, projections)
    assert_all_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=100, deadline=None)
@given(case=cases())
# A query LayerNorm over two channels: the LR gradient is a near-total cancellation, 5.4e-5 off in
# the reference and 3.1e-4 in the folded order on one machine (6.8e-5 on another); the rounding
# sensitivity of that cancellation is 1.5e-5 (it was 3.6e-7 when only the inputs were perturbed).
@example(case=dict(cases_default, batch=1, side=3, window=3, lr_dim=2, hr_dim=2, affine=True,
                   norm_bias=False, linear_bias=False, seed=38798))  # fmt: skip
def test_torch_backend_float32_is_as_accurate_as_the_reference(path, case):
    # Float32 round-off differs between the two orders of computation, so both are measured
    # against the float64 reference: the folded one may not be less accurate than the reference
    # plus a multiple of the case's rounding sensitivity, which grows where a LayerNorm is
    # ill-conditioned (tests/_accuracy.py).
    case32 = build(case, torch.float32)
    reference = functools.partial(outputs_and_grads, "reference")
    exact = reference(*in_float64(*case32))
    with pooling(path):
        got = outputs_and_grads("torch", *case32)
    sensitivity = rounding_sensitivity(reference, case32, exact)
    assert_as_accurate(got, reference(*case32), exact, sensitivity)


def assert_as_accurate_over_draws(dtype, path, autocast=None, draws=8, factor=1.5, atol=1e-3):
    """The folded backend is as accurate as the reference (both against float64), errors summed
    over several draws: in bfloat16/float16 a single draw's error depends on the summation order,
    and so on the thread count."""
    errors_got, errors_ref, scales = 0.0, 0.0, 0.0
    for seed in range(draws):
        lr, hr, projections = build(dict(cases_default, side=3, window=4, hr_dim=24, seed=seed), dtype)
        exact = outputs_and_grads("reference", *in_float64(lr, hr, projections))
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            want = outputs_and_grads("reference", lr, hr, projections)
            with pooling(path):
                got = outputs_and_grads("torch", lr, hr, projections)
        assert [g.dtype for g in got] == [w.dtype for w in want]
        errors_got += torch.tensor([(g.double() - e).abs().max() for g, e in zip(got, exact)])
        errors_ref += torch.tensor([(w.double() - e).abs().max() for w, e in zip(want, exact)])
        scales += torch.tensor([1.0 + e.abs().max() for e in exact])
    bound = factor * errors_ref + atol * scales
    worst = int(torch.argmax(errors_got / bound))
    assert bool((errors_got <= bound).all()), (
        f"[{worst}] summed error {errors_got[worst]:.3g} > {bound[worst]:.3g} "
        f"(reference {errors_ref[worst]:.3g})"
    )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_backend_low_precision_is_as_accurate_as_the_reference(dtype, path):
    assert_as_accurate_over_draws(dtype, path)


@pytest.mark.parametrize("path", PATHS)
def test_torch_backend_under_bf16_autocast_is_as_accurate_as_the_reference(path):
    # Training runs the vision side under autocast; the folded backend keeps its own float32
    # accumulation there (it used to fail on mixed dtypes) and must match the reference's accuracy.
    assert_as_accurate_over_draws(torch.float32, path, autocast=torch.bfloat16)


@pytest.mark.parametrize("path", PATHS)
def test_constant_pixels_give_uniform_attention(path):
    # Zero variance: every normalised vector is 0, scores are equal, attention is uniform.
    lr, hr, projections = build(cases_default, torch.float64)
    hr = torch.ones_like(hr) * 3.0
    with pooling(path):
        got = outputs_and_grads("torch", lr, hr, projections)
    want = outputs_and_grads("reference", lr, hr, projections)
    assert_all_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", PATHS)
def test_pool_windows_gradcheck(path):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    const = torch.randn(2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    hr = torch.randn(2, 5, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    pool = lambda a, b, c: pool_windows(a, b, c, 3, 1e-5, 0.1)  # noqa: E731
    with pooling(path):
        assert torch.autograd.gradcheck(pool, (q, const, hr))


@pytest.mark.parametrize("path", PATHS)
def test_hr_without_grad_and_noncontiguous_views(path):
    lr, hr, projections = build(dict(cases_default, side=3, window=3), torch.float64)
    wide = torch.cat([hr, hr], dim=1)[:, ::2]  # strided channels
    with torch.no_grad():
        want = patch_info_mining(lr, wide.contiguous(), *projections, backend="reference")
    with pooling(path):
        got = patch_info_mining(lr.requires_grad_(True), wide, *projections, backend="torch")
    torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-10)
    got.sum().backward()
    assert lr.grad is not None


def test_pool_windows_takes_the_batched_path_up_to_the_threshold():
    gen = torch.Generator().manual_seed(0)
    q, const = torch.randn(1, 4, 3, generator=gen), torch.randn(1, 4, generator=gen)
    hr = torch.randn(1, 3, 4, 4, generator=gen)  # 48 elements
    batched = mock.Mock(wraps=_folded.pool_windows_batched)
    with mock.patch.object(_folded, "pool_windows_batched", batched):
        with mock.patch.object(_folded, "BATCHED_MAX_ELEMENTS", hr.numel()):
            small = pool_windows(q, const, hr, 2, 1e-5, 1e-5)
        with mock.patch.object(_folded, "BATCHED_MAX_ELEMENTS", hr.numel() - 1):
            large = pool_windows(q, const, hr, 2, 1e-5, 1e-5)
    assert batched.call_count == 1
    torch.testing.assert_close(small, large)


@pytest.mark.parametrize("path", PATHS)
def test_pooling_an_image_does_not_depend_on_its_batch(path):
    gen = torch.Generator().manual_seed(0)
    q, const = torch.randn(3, 16, 24, generator=gen), torch.randn(3, 16, generator=gen)
    hr = torch.randn(3, 24, 32, 32, generator=gen)
    with pooling(path):
        batch = pool_windows(q, const, hr, 8, 1e-5, 1e-5)
        alone = pool_windows(q[1:2], const[1:2], hr[1:2], 8, 1e-5, 1e-5)
    assert torch.equal(batch[1:2], alone)


def test_auto_is_torch_on_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("reference", torch.device("cpu")) == "reference"


def test_auto_backend_leaves_maps_wider_than_the_kernels_to_torch():
    from vlmkit.kernels.window_pooling import MAX_CHANNELS

    cuda = torch.device("cuda")  # resolution only: no tensor is made on it
    assert resolve_backend("auto", cuda, torch.float32, MAX_CHANNELS) == "triton"
    assert resolve_backend("auto", cuda, torch.float32, MAX_CHANNELS + 1) == "torch"
    assert resolve_backend("triton", cuda, torch.float32, MAX_CHANNELS + 1) == "triton"


# --- projections that do not fold fall back to the reference -------------------------------------


class _ScaledNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x) * 2


def _unfoldable(hr_dim: int, lr_dim: int) -> list[nn.Module]:
    hooked = projection(hr_dim, lr_dim)
    hooked.register_forward_hook(lambda m, i, o: o * 0.5)
    return [
        nn.Sequential(nn.Linear(hr_dim, lr_dim)),
        nn.Sequential(nn.LayerNorm(hr_dim), nn.Linear(hr_dim, lr_dim), nn.GELU()),
        nn.Sequential(_ScaledNorm(hr_dim), nn.Linear(hr_dim, lr_dim)),
        hooked,
        nn.Linear(hr_dim, lr_dim),
    ]


@pytest.mark.parametrize("which", ["key", "value"])
@pytest.mark.parametrize("index", range(5))
def test_unfoldable_projections_use_the_reference(which, index):
    lr, hr, (q, k, v) = build(cases_default, torch.float64)
    odd = _unfoldable(6, 4)[index].double()
    assert as_folded(odd, 6) is None
    k, v = (odd, v) if which == "key" else (k, odd)
    with torch.no_grad():
        got = patch_info_mining(lr, hr, q, k, v, backend="torch")
        want = patch_info_mining(lr, hr, q, k, v, backend="reference")
    assert torch.equal(got, want)


# --- errors --------------------------------------------------------------------------------------


def _inputs(n=4, c=4, c_aux=6, h=4, w=None, hb=2):
    lr = torch.randn(2, n, c)
    hr = torch.randn(hb, c_aux, h, w if w is not None else h)
    return lr, hr


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=5), "square number of tokens N, got N=5"),
        (dict(h=4, w=6), "H == W), got H=4, W=6"),
        (dict(h=5), "H=5 must be a positive multiple of the LR grid side sqrt(N)=2"),
        (dict(hb=3), "batch mismatch: lr has B=2, hr has B=3"),
        (dict(c=3), "query_proj input width is 4, expected 3"),
        (dict(c_aux=5), "key_proj input width is 6, expected 5"),
    ],
)
def test_shape_errors_name_the_values(kwargs, message):
    lr, hr = _inputs(**kwargs)
    projections = (projection(4, 4), projection(6, 4), projection(6, 4))
    projections = [p.float() for p in projections]
    with pytest.raises(ValueError) as err:
        patch_info_mining(lr, hr, *projections, backend="torch")
    assert message in str(err.value)


def test_projection_width_errors():
    lr, hr = _inputs()
    q, k, v = (projection(4, 4).float(), projection(6, 4).float(), projection(6, 4).float())
    with pytest.raises(ValueError, match=r"value_proj input width is 5, expected 6"):
        patch_info_mining(lr, hr, q, k, projection(5, 4).float())
    with pytest.raises(ValueError, match=r"value_proj output width is 3, expected 4"):
        patch_info_mining(lr, hr, q, k, projection(6, 3).float())
    with pytest.raises(ValueError, match=r"query_proj output width 4 must equal key_proj .* 5"):
        patch_info_mining(lr, hr, q, projection(6, 5).float(), v)


def test_unknown_backend_lists_the_valid_ones():
    lr, hr = _inputs()
    q, k, v = (projection(4, 4).float(), projection(6, 4).float(), projection(6, 4).float())
    with pytest.raises(ValueError, match=r"unknown patch_info_mining backend 'cuda'.*'reference'"):
        patch_info_mining(lr, hr, q, k, v, backend="cuda")
