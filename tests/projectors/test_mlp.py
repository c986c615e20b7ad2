"""Projectors' options: 2-D position embeddings (``pos_embed_grid``), ``zero_init_last``, ``depth``
checked by ``describe`` exactly as the constructor uses it."""

import pytest
import torch
import vlmkit
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize("name", ["linear", "mlp2x_gelu", "mlp3x_gelu"])
def test_off_by_default_keeps_mgm_keys(name):
    projector = vlmkit.create("projector", name, in_dim=8, out_dim=16)
    assert all(not key.startswith("pos_embed") for key in projector.state_dict())


@settings(max_examples=10, deadline=None)
@given(grid=st.integers(1, 4), batch=st.integers(1, 3))
def test_adds_row_plus_column_embedding_in_raster_order(grid, batch):
    plain = vlmkit.create("projector", "mlp2x_gelu", in_dim=8, out_dim=16)
    placed = vlmkit.create("projector", "mlp2x_gelu", in_dim=8, out_dim=16, pos_embed_grid=grid)
    placed.load_state_dict({**plain.state_dict(), **{k: v for k, v in placed.state_dict().items()
                                                      if k.startswith("pos_embed")}})
    x = torch.randn(batch, grid * grid, 8)
    diff = placed(x) - plain(x)
    for r in range(grid):
        for c in range(grid):
            expected = placed.pos_embed.row[r] + placed.pos_embed.column[c]
            torch.testing.assert_close(diff[:, r * grid + c], expected.expand(batch, -1))


def test_wrong_token_count_and_bad_grid_are_named():
    projector = vlmkit.create("projector", "linear", in_dim=8, out_dim=16, pos_embed_grid=3)
    with pytest.raises(ValueError, match="expects 9 tokens per view, got 8"):
        projector(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match="pos_embed_grid must be a positive int or None, got 0"):
        vlmkit.create("projector", "mlp2x_gelu", in_dim=8, out_dim=16, pos_embed_grid=0)


def tiny_config(projector):
    """A tiny LLaVA-style config (16 visual tokens) with ``projector`` as its projector spec."""
    return {
        "lr_encoder": {"name": "hf-clip-vit", "config": {"hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32,
                       "patch_size": 8}},
        "miner": {"name": "identity"},
        "projector": projector,
        "llm": {"name": "hf-causal-lm", "tokenizer": "byte-level", "config": {
            "model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 260}},
    }  # fmt: skip


def test_builder_accepts_the_keyword():
    model = vlmkit.build(tiny_config({"name": "mlp2x_gelu", "pos_embed_grid": 4}))
    tokens = model.encode_images(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, 16, 32)


# --- zero_init_last -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "mlp2x_gelu", "mlp3x_gelu"])
def test_zero_init_last_starts_at_zero_and_still_learns(name):
    torch.manual_seed(0)
    plain = vlmkit.create("projector", name, in_dim=8, out_dim=16)
    torch.manual_seed(0)
    zeroed = vlmkit.create("projector", name, in_dim=8, out_dim=16, zero_init_last=True)
    assert list(zeroed.state_dict()) == list(plain.state_dict())
    linears = [m for m in zeroed if isinstance(m, torch.nn.Linear)]
    # only the last layer differs from the default initialisation
    for got, want in zip(linears[:-1], [m for m in plain if isinstance(m, torch.nn.Linear)]):
        torch.testing.assert_close(got.weight, want.weight)
    x = torch.randn(2, 5, 8)
    out = zeroed(x)
    assert torch.equal(out, torch.zeros(2, 5, 16))
    (out * torch.randn(2, 5, 16)).sum().backward()
    assert linears[-1].weight.grad.abs().sum() > 0


def test_zero_init_last_with_positions_gives_the_positions_and_bad_values_are_named():
    projector = vlmkit.create("projector", "mlp2x_gelu", in_dim=8, out_dim=16, pos_embed_grid=2,
                              zero_init_last=True)  # fmt: skip
    out = projector(torch.randn(1, 4, 8))
    pos = projector.pos_embed
    torch.testing.assert_close(out[0, 3], pos.row[1] + pos.column[1])
    with pytest.raises(ValueError, match="zero_init_last must be True or False, got 'yes'"):
        vlmkit.create("projector", "linear", in_dim=8, out_dim=16, zero_init_last="yes")


def test_plan_names_a_bad_zero_init_last_before_building():
    config = tiny_config({"name": "mlp2x_gelu", "zero_init_last": 1})
    with pytest.raises(vlmkit.ConfigError, match="zero_init_last must be True or False, got 1"):
        vlmkit.plan(config)


@pytest.mark.parametrize("depth", [0, -1, 1.5, True])
def test_plan_checks_depth_as_build_does(depth):
    from vlmkit.config import ConfigError

    config = {"base": "mgm-tiny", "projector": {"name": "mlp2x_gelu", "depth": depth}}
    # A non-integer is refused by plan's check of the annotation, before the projector's own.
    wrong_type = isinstance(depth, bool) or not isinstance(depth, int)
    expected = "an integer or None" if wrong_type else "an int >= 1"
    with pytest.raises(ConfigError, match=rf"depth must be {expected}, got {depth!r}"):
        vlmkit.plan(config)
    with pytest.raises(ValueError, match=f"depth must be {expected}"):
        vlmkit.create("projector", "mlp2x_gelu", in_dim=8, out_dim=16, depth=depth)


def test_describe_reads_the_constructor_config():
    from vlmkit.components import get

    entry = get("projector", "mlp3x_gelu")
    assert len(vlmkit.create("projector", "mlp3x_gelu", in_dim=2, out_dim=4)) == 5  # 3 Linear
    assert entry.describe(in_dim=2, out_dim=4, depth=1).out_dim == 4
    with pytest.raises(TypeError, match="unexpected keyword argument 'hidden'"):
        entry.describe(in_dim=2, out_dim=4, hidden=9)
    with pytest.raises(TypeError, match="missing a required argument: 'out_dim'"):
        entry.describe(in_dim=2)
