"""Presets: every shipped preset plans offline; the big ones build on the meta device at their real
sizes (parameter counts of the published backbones, 576 or 2880 visual tokens)."""

from __future__ import annotations

import pytest
import torch

import vlmkit

ISSUE_PRESETS = {"mgm-2b", "mgm-7b", "mgm-13b", "mgm-8b", "mgm-8x7b", "mgm-34b", "llava-1.5-7b",
                 "mgm-tiny"}  # fmt: skip
CLIP_L_336 = 303_507_456  # openai/clip-vit-large-patch14-336, vision tower
CONVNEXT_L_TRUNK = 196_227_264  # convnext_large_d_320 stem + 4 stages


def _mining_params(c: int, c_aux: int) -> int:
    """Three Sequential(LayerNorm, Linear): query C->C, key and value C_aux->C."""
    return (2 * c + c * c + c) + 2 * (2 * c_aux + c_aux * c + c)


def test_the_issue_presets_and_their_hd_variants_ship():
    names = set(vlmkit.presets())
    hd = {f"{n}-hd" for n in ISSUE_PRESETS if n.startswith("mgm-") and n != "mgm-tiny"}
    assert ISSUE_PRESETS | hd <= names


@pytest.mark.parametrize("name", vlmkit.presets())
def test_every_preset_plans_offline(name):
    plan = vlmkit.plan(name)
    expected = 64 if name == "mgm-tiny" else 2880 if name.endswith("-hd") else 576
    assert plan.visual_tokens_per_image == expected
    assert plan.infos["projector"].out_dim == plan.infos["llm"].hidden_size


@pytest.mark.parametrize(
    "name, tokens, llm_params, hidden",
    [
        ("mgm-7b-hd", 2880, 6_738_415_616, 4096),  # Vicuna-7B (Llama-2-7B)
        ("mgm-2b", 576, 2_506_172_416, 2048),  # Gemma-2B
        ("mgm-34b-hd", 2880, 34_388_917_248, 7168),  # Nous-Hermes-2-Yi-34B
    ],
)
def test_meta_build_has_the_real_sizes(name, tokens, llm_params, hidden):
    model = vlmkit.build(name, device="meta")
    assert next(model.llm.parameters()).device == torch.device("meta")
    assert model.num_visual_tokens == tokens

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(model.lr_encoder) == CLIP_L_336
    assert count(model.hr_encoder) == CONVNEXT_L_TRUNK
    assert count(model.miner) == _mining_params(1024, 2880)
    assert count(model.projector) == 1024 * hidden + hidden + hidden * hidden + hidden
    assert count(model.llm) == llm_params


def test_build_summary_prints_the_real_architecture():
    from click.testing import CliRunner

    from vlmkit.cli import cli

    result = CliRunner().invoke(cli, ["build", "mgm-7b-hd", "--summary"])
    assert result.exit_code == 0, result.output
    assert "visual tokens per image: 2880 (5 views x 576)" in result.output
    assert "6.74B" in result.output and "303.51M" in result.output
    failed = CliRunner().invoke(cli, ["build", "mgm-7"])
    assert failed.exit_code != 0 and "unknown preset 'mgm-7'" in failed.output
