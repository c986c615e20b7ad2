"""``hf-clip-vit``: declared shapes, MGM's feature selection, loading, freezing, input checks."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from vlmkit._context import no_pretrained
from vlmkit.encoders.clip import CLIPViTEncoder

TINY = CLIPViTEncoder.tiny_config["config"]
# openai/clip-vit-large-patch14-336, as the mgm presets describe it.
CLIP_L_336 = {
    "hidden_size": 1024,
    "image_size": 336,
    "patch_size": 14,
    "num_hidden_layers": 24,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "projection_dim": 768,
}


def _shape(encoder: CLIPViTEncoder, batch: int = 2) -> tuple[int, ...]:
    return (batch, encoder.info.num_tokens, encoder.info.width)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"image_size": 64},  # position embeddings interpolated
        {"config": {**TINY, "image_size": 48}},
        {"select_feature": "cls_patch"},
        {"select_layer": 0},
    ],
)
def test_describe_matches_output(kwargs):
    kwargs = {"config": TINY, **kwargs}
    declared = CLIPViTEncoder.describe(**kwargs)
    encoder = CLIPViTEncoder(**kwargs)
    assert encoder.info == declared
    pixels = torch.randn(2, 3, declared.image_size, declared.image_size)
    with torch.no_grad():
        assert tuple(encoder(pixels).shape) == _shape(encoder)
    side = declared.image_size // TINY["patch_size"]
    assert declared.grid == side
    assert declared.num_tokens == side * side + (kwargs.get("select_feature") == "cls_patch")


def test_describe_mgm_lr_encoder_without_weights():
    info = CLIPViTEncoder.describe(
        pretrained="openai/clip-vit-large-patch14-336", config=CLIP_L_336
    )
    assert (info.width, info.grid, info.num_tokens, info.layout) == (1024, 24, 576, "tokens")


def test_meta_build_of_the_real_architecture():
    with torch.device("meta"), no_pretrained():
        encoder = CLIPViTEncoder(pretrained="openai/clip-vit-large-patch14-336", config=CLIP_L_336)
        out = encoder(torch.empty(1, 3, 336, 336))
    assert next(encoder.parameters()).is_meta
    assert tuple(out.shape) == (1, 576, 1024)


def test_selected_features_equal_hidden_states_minus_2(tmp_path):
    reference = CLIPVisionModel(CLIPVisionConfig(**TINY)).eval()
    reference.save_pretrained(tmp_path)
    encoder = CLIPViTEncoder(pretrained=str(tmp_path))  # architecture read from the directory
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(encoder(pixels), expected, rtol=0, atol=0)
        with_cls = CLIPViTEncoder(pretrained=str(tmp_path), select_feature="cls_patch")
        full = reference(pixels, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(with_cls(pixels), full, rtol=0, atol=0)


def test_loads_the_vision_tower_of_a_full_clip_checkpoint(tmp_path):
    text = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    clip = CLIPModel(CLIPConfig(vision_config=TINY, text_config=text, projection_dim=8)).eval()
    clip.save_pretrained(tmp_path)
    encoder = CLIPViTEncoder(pretrained=str(tmp_path), config=TINY, select_layer=-1)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = clip.vision_model(pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        torch.testing.assert_close(encoder(pixels), expected, rtol=0, atol=0)


def test_no_pretrained_builds_from_the_directory_config_without_weights(tmp_path):
    source = CLIPVisionModel(CLIPVisionConfig(**TINY))
    source.save_pretrained(tmp_path)
    with no_pretrained():
        encoder = CLIPViTEncoder(pretrained=str(tmp_path))
    assert encoder.info == CLIPViTEncoder.describe(config=TINY)
    weight = "embeddings.patch_embedding.weight"
    assert not torch.equal(encoder.vision_tower.state_dict()[weight], source.state_dict()[weight])


def test_frozen_stays_in_eval_without_trainable_params():
    encoder = CLIPViTEncoder(config=TINY)
    encoder.train()
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not any(m.training for m in encoder.modules())
    trainable = CLIPViTEncoder(config=TINY, frozen=False).train()
    assert all(p.requires_grad for p in trainable.parameters())
    assert trainable.vision_tower.training


def test_wrong_pixels_raise():
    encoder = CLIPViTEncoder(config=TINY)
    with pytest.raises(
        ValueError,
        match=r"hf-clip-vit expects pixels of shape \(B, 3, 32, 32\), got \(2, 3, 64, 64\)",
    ):
        encoder(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="expects pixels"):
        encoder(torch.randn(3, 32, 32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"select_feature": "cls"}, "select_feature"),
        ({"select_layer": 3}, "select_layer=3"),
        ({"select_layer": -4}, "select_layer=-4"),
        ({"config": None}, "needs `pretrained`"),
    ],
)
def test_bad_config_raises(kwargs, message):
    kwargs = {"config": TINY, **kwargs}
    with pytest.raises(ValueError, match=message):
        CLIPViTEncoder.describe(**kwargs)
    with pytest.raises(ValueError, match=message):
        CLIPViTEncoder(**kwargs)
