"""The builder: fit checks before any weights exist, filled-in widths, meta-device builds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vlmkit
from vlmkit.config import ConfigError
from vlmkit.interfaces import EncoderInfo, VisionEncoder
from vlmkit.registry import registry


class CountingEncoder(VisionEncoder):
    """A fake encoder that counts constructions (so tests can prove nothing was built)."""

    built = 0

    def __init__(self, width: int = 8, image_size: int = 16, patch: int = 4):
        super().__init__()
        type(self).built += 1
        self.info = self.describe(width=width, image_size=image_size, patch=patch)
        self.proj = nn.Conv2d(3, width, patch, patch)

    @classmethod
    def describe(cls, width: int = 8, image_size: int = 16, patch: int = 4, **_):
        return EncoderInfo(width=width, grid=image_size // patch, image_size=image_size)

    def forward(self, pixels):
        return self.proj(pixels).flatten(2).transpose(1, 2)


@pytest.fixture
def counting_encoder():
    vlmkit.register("vision_encoder", "test-counting", CountingEncoder)
    CountingEncoder.built = 0
    yield CountingEncoder
    registry("vision_encoder").unregister("test-counting")


LLM = {"name": "hf-causal-lm", **vlmkit.components.get("llm", "hf-causal-lm").tiny}


def _config(**overrides):
    cfg = {
        "lr_encoder": {"name": "test-counting", "width": 8},
        "miner": "identity",
        "projector": {"name": "mlp2x_gelu"},
        "llm": LLM,
    }
    cfg.update(overrides)
    return cfg


def test_widths_are_filled_in(counting_encoder):
    plan = vlmkit.plan(_config())
    assert plan.kwargs["projector"] == {"in_dim": 8, "out_dim": 32}
    assert plan.visual_tokens_per_image == 16
    assert counting_encoder.built == 0


def test_width_mismatch_fails_before_any_weights(counting_encoder, monkeypatch):
    allocations = []
    original = nn.Linear.__init__

    def spy(self, *args, **kwargs):
        allocations.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(nn.Linear, "__init__", spy)
    cfg = _config(projector={"name": "mlp2x_gelu", "in_dim": 12})
    with pytest.raises(ConfigError) as err:
        vlmkit.build(cfg)
    message = str(err.value)
    assert "projector 'mlp2x_gelu' has in_dim=12" in message
    assert "miner 'identity' outputs width=8" in message
    assert counting_encoder.built == 0 and allocations == []


def test_every_mismatch_is_reported_at_once(counting_encoder):
    cfg = _config(projector={"name": "mlp2x_gelu", "in_dim": 12, "out_dim": 64})
    with pytest.raises(ConfigError) as err:
        vlmkit.plan(cfg)
    message = str(err.value)
    assert "in_dim=12" in message and "width=8" in message
    assert "out_dim=64" in message and "hidden_size=32" in message


def test_unknown_component_and_key_are_reported_together(counting_encoder):
    cfg = _config(miner="idenity", projector={"name": "mlp2x_gelu", "hiden": 3})
    with pytest.raises(ConfigError) as err:
        vlmkit.plan(cfg)
    message = str(err.value)
    assert "unknown miner 'idenity'" in message and "'identity'" in message
    assert "projector 'mlp2x_gelu': unknown config key(s) ['hiden']" in message


def test_miner_and_hr_encoder_must_agree(counting_encoder):
    with pytest.raises(ConfigError, match="no hr_encoder is set"):
        vlmkit.plan(_config(miner="channel_concat"))
    with pytest.raises(ConfigError, match="does not use one"):
        vlmkit.plan(_config(hr_encoder={"name": "test-counting"}))


def test_channel_concat_width_flows_to_projector(counting_encoder):
    plan = vlmkit.plan(
        _config(hr_encoder={"name": "test-counting", "width": 6, "image_size": 32}, miner="channel_concat")
    )
    assert plan.kwargs["projector"]["in_dim"] == 14
    model = vlmkit.build(plan.config)
    tokens = model.encode_images(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, 16, 32)


def test_meta_build_allocates_no_storage(counting_encoder):
    model = vlmkit.build(_config(), device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())


def test_plan_checks_the_chat_templates(counting_encoder):
    config = _config(chat_template="vicuna_v2", training={"pretrain": {"chat_template": "plian"}})
    with pytest.raises(ConfigError) as err:
        vlmkit.plan(config)
    message = str(err.value)
    assert "chat_template: unknown chat template 'vicuna_v2'" in message
    assert "training.pretrain.chat_template: unknown chat template 'plian'" in message
    assert counting_encoder.built == 0
