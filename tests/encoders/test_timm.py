"""``timm``: fused maps and ViT tokens from forward_intermediates, meta describe, local loading."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.layers import DropPath

from vlmkit._context import no_pretrained
from vlmkit.encoders.timm_encoder import TimmEncoder


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"model_name": "test_convnext", "image_size": 64}, (168, 16, 16)),
        (
            {"model_name": "test_convnext", "image_size": 96, "out_indices": (1, -1)},
            (32 + 64, 12, 12),
        ),
        ({"model_name": "test_resnet", "image_size": 64, "out_indices": (-2,)}, (192, 4, 4)),
        ({"model_name": "test_vit", "image_size": 64}, (16, 64)),  # tokens, last block
        ({"model_name": "test_vit", "image_size": 96, "out_indices": (-2,)}, (36, 64)),
        (
            {"model_name": "test_vit", "image_size": 64, "layout": "map"},
            (6 * 64, 4, 4),
        ),  # all 6 blocks
        (
            {
                "model_name": "test_convnext",
                "image_size": 64,
                "layout": "tokens",
                "out_indices": (2,),
            },
            (16, 48),
        ),
    ],
)
def test_describe_matches_output(kwargs, shape):
    declared = TimmEncoder.describe(**kwargs)
    encoder = TimmEncoder(**kwargs)
    assert encoder.info == declared
    pixels = torch.randn(2, 3, declared.image_size, declared.image_size)
    with torch.no_grad():
        out = encoder(pixels)
    assert tuple(out.shape) == (2, *shape)
    expected = (2, declared.width, declared.grid, declared.grid)
    if declared.layout == "tokens":
        expected = (2, declared.num_tokens, declared.width)
    assert tuple(out.shape) == expected


def test_describe_builds_nothing_real():
    info = TimmEncoder.describe(model_name="vit_large_patch14_clip_336", out_indices=(-2,))
    assert (info.width, info.grid, info.num_tokens, info.layout) == (1024, 24, 576, "tokens")
    info = TimmEncoder.describe(model_name="convnext_large", image_size=768)
    assert (info.width, info.grid, info.layout, info.multi_scale) == (2880, 192, "map", True)


def test_convnext_map_equals_fused_intermediates_of_a_loaded_checkpoint(tmp_path):
    source = timm.create_model("test_convnext").eval()  # with its classifier head
    path = tmp_path / "convnext.pth"
    torch.save(source.state_dict(), path)
    encoder = TimmEncoder(model_name="test_convnext", pretrained=str(path), image_size=64)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = source.forward_intermediates(pixels, intermediates_only=True)
        size = maps[0].shape[-2:]
        rest = [
            F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)
            for m in maps[1:]
        ]
        torch.testing.assert_close(encoder(pixels), torch.cat([maps[0], *rest], 1), rtol=0, atol=0)


def test_vit_tokens_equal_block_outputs_without_class_token(tmp_path):
    source = timm.create_model("test_vit", img_size=64, num_classes=0).eval()
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()},
        str(tmp_path / "model.safetensors"),
    )
    encoder = TimmEncoder(
        model_name="test_vit", pretrained=str(tmp_path), image_size=64, out_indices=(-2,)
    )
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        x = source.norm_pre(source._pos_embed(source.patch_embed(pixels)))
        for block in source.blocks[:-1]:
            x = block(x)
        torch.testing.assert_close(
            encoder(pixels), x[:, source.num_prefix_tokens :], rtol=0, atol=0
        )


def test_no_pretrained_loads_no_weights(tmp_path):
    source = timm.create_model("test_convnext")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    with no_pretrained():
        encoder = TimmEncoder(model_name="test_convnext", pretrained=str(path), image_size=64)
    assert not torch.equal(encoder.trunk.stem[0].weight, source.stem[0].weight)


def test_frozen_turns_off_drop_path_and_stays_in_eval():
    kwargs = {
        "model_name": "test_convnext",
        "image_size": 64,
        "model_kwargs": {"drop_path_rate": 0.2},
    }
    frozen = TimmEncoder(**kwargs).train()
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not any(m.training for m in frozen.modules())
    assert not any(isinstance(m, DropPath) and m.drop_prob > 0 for m in frozen.modules())
    trainable = TimmEncoder(**kwargs, frozen=False).train()
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())
    assert any(isinstance(m, DropPath) and m.drop_prob > 0 for m in trainable.modules())


def test_wrong_input_and_config_raise(tmp_path):
    encoder = TimmEncoder(model_name="test_convnext", image_size=64)
    with pytest.raises(
        ValueError, match=r"timm expects pixels of shape \(B, 3, 64, 64\), got \(2, 3, 32, 32\)"
    ):
        encoder(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown model 'test_convnex'"):
        TimmEncoder.describe(model_name="test_convnex")
    with pytest.raises(ValueError, match="out_indices"):
        TimmEncoder.describe(model_name="test_convnext", out_indices=(3, 1))
    with pytest.raises(ValueError, match="out_indices"):
        TimmEncoder.describe(model_name="test_convnext", out_indices=(4,))
    with pytest.raises(ValueError, match="layout"):
        TimmEncoder.describe(model_name="test_convnext", layout="grid")
    with pytest.raises(ValueError, match="cannot take 16 px input"):
        TimmEncoder.describe(model_name="test_convnext", image_size=16)
    with pytest.raises(ValueError, match="disagrees"):
        TimmEncoder.describe(model_name="test_vit", model_kwargs={"img_size": 96}, image_size=64)
    with pytest.raises(ValueError, match="local checkpoint"):
        TimmEncoder(model_name="test_convnext", pretrained=str(tmp_path / "missing.pth"))
