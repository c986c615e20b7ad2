"""vlmkit-encoders as vlmkit finds it: through the ``vlmkit`` entry point of the installed
distribution. The registry-wide conformance tests (``tests/test_conformance.py``) also build both
encoders at their ``tiny_config``; these tests check what is specific to each."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import Dinov2Config, Dinov2Model  # noqa: E402

import vlmkit  # noqa: E402
from vlmkit.components import get  # noqa: E402

HYBRID = Path(__file__).resolve().parents[1] / "configs" / "deepseek-vl-style.yaml"


@pytest.mark.parametrize("name", ["hf-dinov2", "timm-sam"])
def test_registered_through_the_entry_point(name):
    assert name in vlmkit.available("vision_encoder")
    origin = get("vision_encoder", name).origin
    assert (origin.source, origin.distribution, origin.entry_point) == (
        "plugin", "vlmkit-encoders", "encoders"
    )


def test_dinov2_loads_a_checkpoint_and_returns_the_selected_layer(tmp_path):
    config = dict(get("vision_encoder", "hf-dinov2").tiny["config"])
    reference = Dinov2Model(Dinov2Config(**config)).eval()
    reference.save_pretrained(tmp_path)
    encoder = vlmkit.create("vision_encoder", "hf-dinov2", pretrained=str(tmp_path), select_layer=-2)
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = reference(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(encoder(pixels), expected)
    assert encoder.info.num_tokens == 16 and not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training


def test_dinov2_other_size_and_bad_values():
    encoder = vlmkit.create("vision_encoder", "hf-dinov2", image_size=42, frozen=False,
                            **get("vision_encoder", "hf-dinov2").tiny)
    assert encoder(torch.randn(1, 3, 42, 42)).shape == (1, 36, 32)
    assert all(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ValueError, match="image_size=30 is not a multiple of patch_size=7"):
        vlmkit.create("vision_encoder", "hf-dinov2", image_size=30, **get("vision_encoder", "hf-dinov2").tiny)
    with pytest.raises(ValueError, match="select_layer=5 is out of range"):
        vlmkit.create("vision_encoder", "hf-dinov2", select_layer=5, **get("vision_encoder", "hf-dinov2").tiny)
    with pytest.raises(ValueError, match=r"expects pixels of shape \(B, 3, 42, 42\)"):
        encoder(torch.randn(1, 3, 28, 28))


def test_sam_is_timms_encoder_with_its_neck(tmp_path):
    from safetensors.torch import save_file

    tiny = get("vision_encoder", "timm-sam").tiny
    reference = timm.create_model("samvit_base_patch16", num_classes=0, img_size=64, **tiny["model_kwargs"]).eval()
    checkpoint = tmp_path / "sam.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(checkpoint))
    encoder = vlmkit.create("vision_encoder", "timm-sam", pretrained=str(checkpoint), **tiny)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), reference.forward_features(pixels))
    assert encoder.info.layout == "map" and (encoder.info.width, encoder.info.grid) == (16, 4)
    with pytest.raises(ValueError, match="samvit_"):
        vlmkit.create("vision_encoder", "timm-sam", model_name="vit_base_patch16_224")


def test_deepseek_vl_style_hybrid_plans_at_real_size():
    checked = vlmkit.plan(str(HYBRID))
    assert checked.infos["hr_encoder"].width == 256 and checked.infos["hr_encoder"].grid == 64
    assert checked.infos["miner"].width == 1024 + 256
    assert checked.visual_tokens_per_image == 576


def test_deepseek_vl_style_hybrid_runs_at_tiny_size():
    config = vlmkit.load_config(str(HYBRID)).to_dict()
    config["lr_encoder"]["config"] = dict(get("vision_encoder", "hf-siglip").tiny["config"], image_size=32)
    config["hr_encoder"].update(get("vision_encoder", "timm-sam").tiny)
    config["llm"] = {"name": "hf-causal-lm", "tokenizer": "byte-level", "config": {
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 260,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}}
    model = vlmkit.build(config).eval()
    image = Image.new("RGB", (80, 60), "blue")
    assert model.encode_images([image]).shape == (1, 16, 32)
    assert isinstance(model.chat(image, [{"role": "user", "content": "Describe."}], max_new_tokens=3), str)
