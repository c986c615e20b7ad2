"""The ``patch_info_mining`` miner: registration, ``describe`` and its errors, MGM parameter names,
forward against the op and a safetensors round trip."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlmkit.interfaces import EncoderInfo, MinerInfo
from vlmkit.miners.patch_info_miner import PatchInfoMining
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
