"""``openclip-convnext``: Mini-Gemini's fused HR map, open_clip loading, the name rule, freezing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from safetensors.torch import save_file
from timm.layers import DropPath

from vlmkit._context import no_pretrained
from vlmkit.encoders.convnext import (
    OpenCLIPConvNeXtEncoder,
    model_name_from_path,
    open_clip_to_vlmkit,
)

MODEL_CFG = OpenCLIPConvNeXtEncoder.tiny_config["model_cfg"]  # timm test_convnext: 24/32/48/64 ch


def _open_clip_dir(path, model: CLIP, *, safetensors: bool = False, with_model_cfg: bool = True):
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": MODEL_CFG} if with_model_cfg else {}
    (path / "open_clip_config.json").write_text(json.dumps({**config, "preprocess_cfg": {}}))
    state = model.state_dict()
    if safetensors:
        save_file(
            {k: v.contiguous() for k, v in state.items()}, str(path / "open_clip_model.safetensors")
        )
    else:
        torch.save(state, path / "open_clip_pytorch_model.bin")
    return path


def _fused_reference(trunk, pixels: torch.Tensor, stages=(0, 1, 2, 3)) -> torch.Tensor:
    """Mini-Gemini's fusion restated: stem, each stage, resize to the first kept stage, concat."""
    x = trunk.stem(pixels)
    kept = []
    for index, stage in enumerate(trunk.stages):
        x = stage(x)
        if index in stages:
            kept.append(x)
    size = kept[0].shape[-2:]
    rest = [
        F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False) for m in kept[1:]
    ]
    return torch.cat([kept[0], *rest], dim=1)


def test_describe_convnext_large_d_320_from_open_clip_config():
    info = OpenCLIPConvNeXtEncoder.describe(model_name="convnext_large_d_320", image_size=768)
    assert (info.width, info.grid, info.layout, info.multi_scale) == (2880, 192, "map", True)
    hd = OpenCLIPConvNeXtEncoder.describe(model_name="convnext_large_d_320", image_size=1536)
    assert (hd.width, hd.grid) == (2880, 384)
    assert (
        OpenCLIPConvNeXtEncoder.describe().image_size == 320
    )  # the default tower, its config size


@pytest.mark.parametrize(
    "kwargs, width, grid",
    [
        ({}, 24 + 32 + 48 + 64, 16),
        ({"image_size": 96}, 168, 24),
        ({"stages": (1, 2, 3)}, 32 + 48 + 64, 8),
        ({"stages": [0, 2]}, 24 + 48, 16),
        ({"stages": (3,)}, 64, 2),
    ],
)
def test_describe_matches_output(kwargs, width, grid):
    kwargs = {"model_cfg": MODEL_CFG, **kwargs}
    declared = OpenCLIPConvNeXtEncoder.describe(**kwargs)
    encoder = OpenCLIPConvNeXtEncoder(**kwargs)
    assert encoder.info == declared
    assert (declared.width, declared.grid) == (width, grid)
    pixels = torch.randn(2, 3, declared.image_size, declared.image_size)
    with torch.no_grad():
        assert tuple(encoder(pixels).shape) == (2, width, grid, grid)


def test_state_dict_uses_mgm_names():
    keys = OpenCLIPConvNeXtEncoder(model_cfg=MODEL_CFG).state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"vision_stem", "vision_stages"}
    assert {k.split(".")[1] for k in keys if k.startswith("vision_stages")} == {"0", "1", "2", "3"}
    partial = OpenCLIPConvNeXtEncoder(model_cfg=MODEL_CFG, stages=(0, 1)).state_dict().keys()
    assert not any(k.startswith(("vision_stages.2", "vision_stages.3")) for k in partial)


@pytest.mark.parametrize("safetensors", [False, True])
def test_pretrained_dir_gives_the_fused_open_clip_trunk(tmp_path, safetensors):
    source = CLIP(**MODEL_CFG).eval()
    tower = _open_clip_dir(tmp_path / "tiny-tower", source, safetensors=safetensors)
    encoder = OpenCLIPConvNeXtEncoder(pretrained=str(tower))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(pixels), _fused_reference(source.visual.trunk, pixels), rtol=0, atol=0
        )
        later = OpenCLIPConvNeXtEncoder(pretrained=str(tower), stages=(1, 3), image_size=96)
        pixels = torch.randn(1, 3, 96, 96)
        expected = _fused_reference(source.visual.trunk, pixels, stages=(1, 3))
        torch.testing.assert_close(later(pixels), expected, rtol=0, atol=0)


def test_load_from_an_open_clip_state_dict():
    source = CLIP(**MODEL_CFG).eval()
    encoder = OpenCLIPConvNeXtEncoder(model_cfg=MODEL_CFG)
    encoder.load_open_clip(source.state_dict())
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(pixels), _fused_reference(source.visual.trunk, pixels), rtol=0, atol=0
        )
    converted = open_clip_to_vlmkit(source.state_dict())
    assert set(converted) == set(encoder.state_dict())
    with pytest.raises(ValueError, match="lacks"):
        encoder.load_open_clip(
            {k: v for k, v in source.state_dict().items() if "stages.3" not in k}
        )


def test_fusion_keeps_dtype_and_interpolates_in_fp32():
    encoder = OpenCLIPConvNeXtEncoder(model_cfg=MODEL_CFG).to(torch.bfloat16)
    pixels = torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        out = encoder(pixels)
        expected = _fused_reference(_Trunk(encoder), pixels)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected.to(torch.bfloat16), rtol=0, atol=0)


class _Trunk:
    """The encoder's modules under timm's names, for the restatement above."""

    def __init__(self, encoder: OpenCLIPConvNeXtEncoder) -> None:
        self.stem, self.stages = encoder.vision_stem, encoder.vision_stages


def test_name_rule():
    assert (
        model_name_from_path(
            "model_zoo/OpenAI/openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup"
        )
        == "convnext_large_d_320"
    )
    assert (
        model_name_from_path("laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup/")
        == "convnext_large_d_320"
    )
    assert (
        model_name_from_path("laion/CLIP-convnext_base_w_320-laion_aesthetic-s13B-b82K")
        == "convnext_base_w_320"
    )
    assert (
        model_name_from_path("laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup")
        == "convnext_xxlarge"
    )
    assert model_name_from_path("openai/clip-vit-large-patch14-336") is None


def test_dir_without_model_cfg_falls_back_to_the_name_rule(tmp_path):
    tower = tmp_path / "openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup"
    tower.mkdir()
    (tower / "open_clip_config.json").write_text(json.dumps({"preprocess_cfg": {}}))
    info = OpenCLIPConvNeXtEncoder.describe(pretrained=str(tower), image_size=768)
    assert (info.width, info.grid) == (2880, 192)
    with pytest.raises(ValueError, match="cannot tell the architecture"):
        OpenCLIPConvNeXtEncoder.describe(pretrained=str(tmp_path))


def test_no_pretrained_loads_no_weights(tmp_path):
    source = CLIP(**MODEL_CFG)
    tower = _open_clip_dir(tmp_path / "tower", source)
    with no_pretrained():
        encoder = OpenCLIPConvNeXtEncoder(pretrained=str(tower))
    assert not torch.equal(encoder.vision_stem[0].weight, source.visual.trunk.stem[0].weight)


def test_meta_build_of_the_real_tower():
    with torch.device("meta"), no_pretrained():
        encoder = OpenCLIPConvNeXtEncoder(
            model_name="convnext_large_d_320",
            pretrained="laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup",
            image_size=768,
        )
        out = encoder(torch.empty(1, 3, 768, 768))
    assert tuple(out.shape) == (1, 2880, 192, 192)


def test_frozen_turns_off_drop_path_and_stays_in_eval():
    frozen = OpenCLIPConvNeXtEncoder(model_cfg=MODEL_CFG).train()
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not any(m.training for m in frozen.modules())
    assert not any(isinstance(m, DropPath) and m.drop_prob > 0 for m in frozen.modules())
    trainable = OpenCLIPConvNeXtEncoder(model_cfg=MODEL_CFG, frozen=False).train()
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())
    assert any(isinstance(m, DropPath) and m.drop_prob > 0 for m in trainable.modules())


def test_wrong_input_and_config_raise():
    encoder = OpenCLIPConvNeXtEncoder(model_cfg=MODEL_CFG)
    with pytest.raises(
        ValueError,
        match=r"openclip-convnext expects pixels of shape \(B, 3, 64, 64\), got \(1, 3, 96, 96\)",
    ):
        encoder(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="stages must be increasing"):
        OpenCLIPConvNeXtEncoder.describe(model_cfg=MODEL_CFG, stages=(2, 1))
    with pytest.raises(ValueError, match="stages must be increasing"):
        OpenCLIPConvNeXtEncoder.describe(model_cfg=MODEL_CFG, stages=(0, 4))
    with pytest.raises(ValueError, match="unknown open_clip model"):
        OpenCLIPConvNeXtEncoder.describe(model_name="convnext_huge_d_999")
    with pytest.raises(ValueError, match="image_size=16"):
        OpenCLIPConvNeXtEncoder.describe(model_cfg=MODEL_CFG, image_size=16)
