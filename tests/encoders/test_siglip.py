"""``hf-siglip``: declared shapes (no class token), layer choice, loading, freezing, bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from vlmkit._context import no_pretrained
from vlmkit.encoders.siglip import SiglipEncoder

TINY = SiglipEncoder.tiny_config["config"]
# google/siglip-so400m-patch14-384's vision tower.
SO400M = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
}


@pytest.mark.parametrize(
    "kwargs", [{}, {"image_size": 64}, {"config": {**TINY, "image_size": 48}}, {"select_layer": -1}]
)
def test_describe_matches_output(kwargs):
    kwargs = {"config": TINY, **kwargs}
    declared = SiglipEncoder.describe(**kwargs)
    encoder = SiglipEncoder(**kwargs)
    assert encoder.info == declared
    assert declared.extra_tokens == 0
    pixels = torch.randn(2, 3, declared.image_size, declared.image_size)
    with torch.no_grad():
        assert tuple(encoder(pixels).shape) == (2, declared.grid**2, declared.width)


def test_describe_so400m_without_weights():
    info = SiglipEncoder.describe(config=SO400M)
    assert (info.width, info.grid, info.num_tokens) == (1152, 27, 729)


def test_features_equal_hidden_states_of_the_loaded_model(tmp_path):
    reference = SiglipVisionModel(SiglipVisionConfig(**TINY)).eval()  # with its pooling head
    reference.save_pretrained(tmp_path)
    encoder = SiglipEncoder(pretrained=str(tmp_path))
    assert not hasattr(encoder.vision_tower, "head")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = reference(pixels, output_hidden_states=True).hidden_states
        torch.testing.assert_close(encoder(pixels), hidden[-2], rtol=0, atol=0)
        last = SiglipEncoder(pretrained=str(tmp_path), select_layer=-1)
        torch.testing.assert_close(last(pixels), hidden[-1], rtol=0, atol=0)


def test_no_pretrained_loads_no_weights(tmp_path):
    source = SiglipVisionModel(SiglipVisionConfig(**TINY))
    source.save_pretrained(tmp_path)
    with no_pretrained():
        encoder = SiglipEncoder(pretrained=str(tmp_path))
    weight = "embeddings.patch_embedding.weight"
    assert not torch.equal(encoder.vision_tower.state_dict()[weight], source.state_dict()[weight])


def test_frozen_stays_in_eval_without_trainable_params():
    encoder = SiglipEncoder(config=TINY).train()
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not any(m.training for m in encoder.modules())
    assert SiglipEncoder(config=TINY, frozen=False).train().training


def test_wrong_pixels_and_layers_raise():
    encoder = SiglipEncoder(config=TINY)
    with pytest.raises(
        ValueError,
        match=r"hf-siglip expects pixels of shape \(B, 3, 32, 32\), got \(1, 3, 40, 40\)",
    ):
        encoder(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match="select_layer=5"):
        SiglipEncoder.describe(config=TINY, select_layer=5)
