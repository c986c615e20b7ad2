"""The ``patch_info_mining`` miner: registration, ``describe`` and its errors, MGM parameter names,
forward against the op, a safetensors round trip, and the MGM-HD split of HR maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vlmkit.interfaces import EncoderInfo, MinerInfo
from vlmkit.miners.mining import PatchInfoMining, split_hr_views
from vlmkit.ops import patch_info_mining
from vlmkit.registry import registry

LR = EncoderInfo(width=32, grid=4, image_size=32, layout="tokens")
HR = EncoderInfo(width=48, grid=16, image_size=64, layout="map", multi_scale=True)


def test_registered_under_its_name():
    entry = registry("miner").get("patch_info_mining")
    assert entry.factory is PatchInfoMining
    assert entry.param_names == ["lr_dim", "hr_dim", "backend"]
    assert entry.tiny == {"lr_dim": 32, "hr_dim": 48}
    assert PatchInfoMining.uses_hr


def test_describe():
    info = PatchInfoMining.describe(LR, HR, lr_dim=32, hr_dim=48)
    assert info == MinerInfo(width=32, num_tokens=16)
    assert PatchInfoMining.describe(LR, HR) == MinerInfo(width=32, num_tokens=16)


@pytest.mark.parametrize(
    "lr, hr, kwargs, message",
    [
        (LR, None, {}, "needs an hr_encoder"),
        (EncoderInfo(32, 4, 32, "tokens", extra_tokens=1), HR, {}, "extra_tokens=1"),
        (EncoderInfo(32, 4, 32, "map"), HR, {}, "got layout='map', extra_tokens=0"),
        (LR, EncoderInfo(48, 16, 64, "tokens"), {}, "HR features as a map, got layout='tokens'"),
        (LR, EncoderInfo(48, 18, 64, "map"), {}, "HR grid 18 and LR grid 4 (18 % 4 = 2)"),
        (LR, HR, {"lr_dim": 16}, "lr_dim=16 but the lr_encoder width is 32"),
        (LR, HR, {"hr_dim": 2880}, "hr_dim=2880 but the hr_encoder width is 48"),
        (LR, HR, {"backend": "fast"}, "unknown backend 'fast'"),
    ],
)
def test_describe_errors_name_the_values(lr, hr, kwargs, message):
    with pytest.raises(ValueError) as err:
        PatchInfoMining.describe(lr, hr, **kwargs)
    assert message in str(err.value)


def test_unknown_backend_in_constructor():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        PatchInfoMining(32, 48, backend="cuda")


def test_parameter_names_follow_mgm():
    miner = PatchInfoMining(lr_dim=8, hr_dim=12)
    shapes = {k: tuple(v.shape) for k, v in miner.state_dict().items()}
    expected = {}
    for name, width in (("query", 8), ("aux", 12), ("val", 12)):
        prefix = f"vlm_uni_{name}_projector"
        expected[f"{prefix}.0.weight"] = (width,)
        expected[f"{prefix}.0.bias"] = (width,)
        expected[f"{prefix}.1.weight"] = (8, width)
        expected[f"{prefix}.1.bias"] = (8,)
    assert shapes == expected


@pytest.mark.parametrize("backend", ["reference", "torch", "auto"])
def test_forward_is_the_op(backend):
    miner = PatchInfoMining(lr_dim=8, hr_dim=12, backend=backend).double()
    lr = torch.randn(2, 9, 8, dtype=torch.float64)
    hr = torch.randn(2, 12, 12, 12, dtype=torch.float64)
    out = miner(lr, hr)
    want = patch_info_mining(
        lr,
        hr,
        miner.vlm_uni_query_projector,
        miner.vlm_uni_aux_projector,
        miner.vlm_uni_val_projector,
        backend="reference",
    )
    assert out.shape == (2, 9, 8)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)


def test_forward_needs_hr():
    with pytest.raises(ValueError, match="needs HR features"):
        PatchInfoMining(8, 12)(torch.randn(1, 4, 8))


def test_state_dict_round_trip(tmp_path):
    miner = PatchInfoMining(**PatchInfoMining.tiny_config).eval()
    with torch.no_grad():
        for p in miner.parameters():
            p.normal_()
    path = tmp_path / "miner.safetensors"
    save_file({k: v.contiguous() for k, v in miner.state_dict().items()}, str(path))
    again = PatchInfoMining(**PatchInfoMining.tiny_config).eval()
    again.load_state_dict(load_file(str(path)))
    lr, hr = torch.randn(2, 16, 32), torch.randn(2, 48, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(lr, hr), miner(lr, hr), rtol=0, atol=0)


# --- MGM-HD views --------------------------------------------------------------------------------


def test_split_hr_views_order_global_first_then_row_major_crops():
    b, c, size = 2, 3, 8
    hr = torch.arange(b * c * size * size, dtype=torch.float32).reshape(b, c, size, size)
    views = split_hr_views(hr, image_grid=2, image_global=True)
    assert views.shape == (b * 5, c, 4, 4)
    for i in range(b):
        whole = F.interpolate(hr[i : i + 1], size=(4, 4), mode="bilinear", align_corners=False)
        torch.testing.assert_close(views[i * 5], whole[0], rtol=0, atol=0)
        crops = [hr[i, :, :4, :4], hr[i, :, :4, 4:], hr[i, :, 4:, :4], hr[i, :, 4:, 4:]]
        for j, crop in enumerate(crops):
            assert torch.equal(views[i * 5 + 1 + j], crop)


def test_split_hr_views_without_global_and_grid_three():
    hr = torch.randn(1, 2, 9, 9)
    views = split_hr_views(hr, image_grid=3, image_global=False)
    assert views.shape == (9, 2, 3, 3)
    assert torch.equal(views[5], hr[0, :, 3:6, 6:9])  # row 1, column 2


def test_split_hr_views_grid_one():
    hr = torch.randn(2, 3, 4, 4)
    assert split_hr_views(hr, 1, False) is hr
    views = split_hr_views(hr, 1, True)  # global view (same size) then the whole map
    assert views.shape == (4, 3, 4, 4)
    torch.testing.assert_close(views[0], hr[0])
    assert torch.equal(views[1], hr[0])


def test_split_hr_views_keeps_dtype_and_resizes_in_float32():
    hr = torch.randn(1, 2, 8, 8).to(torch.bfloat16)
    views = split_hr_views(hr, 2, True)
    assert views.dtype == torch.bfloat16
    whole = F.interpolate(hr.float(), size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.equal(views[0], whole[0].to(torch.bfloat16))


@pytest.mark.parametrize(
    "shape, grid, message",
    [
        ((1, 2, 9, 9), 2, "hr size 9x9 is not divisible by image_grid=2"),
        ((1, 2, 8, 8), 0, "image_grid must be >= 1, got 0"),
        ((2, 8, 8), 2, "hr must be (B, C, H, W), got shape (2, 8, 8)"),
    ],
)
def test_split_hr_views_errors(shape, grid, message):
    with pytest.raises(ValueError) as err:
        split_hr_views(torch.randn(*shape), grid, True)
    assert message in str(err.value)
