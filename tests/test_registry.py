"""Registry behaviour: register, create, available, duplicates, unknown names and keys."""

from __future__ import annotations

import pytest
from torch import nn

import vlmkit
from vlmkit.components import get
from vlmkit.registry import (
    DuplicateComponentError,
    UnknownComponentError,
    UnknownKindError,
    registry,
)


@pytest.fixture
def scratch_names():
    names: list[tuple[str, str]] = []
    yield names
    for kind, name in names:
        if name in registry(kind).names():
            registry(kind).unregister(name)


def test_kinds_are_pinned():
    assert vlmkit.KINDS == ("vision_encoder", "miner", "projector", "llm", "bridge")


def test_available_all_kinds_sorted():
    everything = vlmkit.available()
    assert set(everything) == set(vlmkit.KINDS)
    for names in everything.values():
        assert names == sorted(names)
    assert {"identity", "channel_concat", "sequence_concat"} <= set(everything["miner"])
    assert {"linear", "mlp2x_gelu"} <= set(everything["projector"])


def test_register_decorator_records_signature_and_origin(scratch_names):
    @vlmkit.register("projector", "test-scaled", tiny={"in_dim": 2, "out_dim": 3})
    class Scaled(nn.Module):
        """Scales then projects."""

        def __init__(self, in_dim: int, out_dim: int, scale: float = 2.0):
            super().__init__()
            self.proj = nn.Linear(in_dim, out_dim)
            self.scale = scale

    scratch_names.append(("projector", "test-scaled"))
    entry = get("projector", "test-scaled")
    assert entry.param_names == ["in_dim", "out_dim", "scale"]
    assert [p.required for p in entry.params] == [True, True, False]
    assert entry.tiny == {"in_dim": 2, "out_dim": 3}
    assert str(entry.origin) == "user"
    assert entry.description == "Scales then projects."
    made = vlmkit.create("projector", "test-scaled", in_dim=4, out_dim=5, scale=0.5)
    assert made.proj.weight.shape == (5, 4) and made.scale == 0.5


def test_a_component_class_learns_its_registry_name(scratch_names):
    from vlmkit.interfaces import VisionEncoder

    class Named(VisionEncoder):
        pass

    class Unrelated(nn.Module):  # not a vision encoder: left as it is
        pass

    vlmkit.register("vision_encoder", "test-named", Named)
    vlmkit.register("vision_encoder", "test-unrelated", Unrelated)
    scratch_names += [("vision_encoder", "test-named"), ("vision_encoder", "test-unrelated")]
    assert Named.name == "test-named" and VisionEncoder.name == "vision encoder"
    assert not hasattr(Unrelated, "name")
    assert get("vision_encoder", "hf-clip-vit").factory.name == "hf-clip-vit"


def test_register_function_factory(scratch_names):
    def make(width: int = 3):
        return nn.Linear(width, width)

    vlmkit.register("projector", "test-fn", make)
    scratch_names.append(("projector", "test-fn"))
    assert vlmkit.create("projector", "test-fn", width=7).in_features == 7


def test_duplicate_name_raises_and_keeps_the_first(scratch_names):
    with pytest.raises(DuplicateComponentError, match=r"projector 'mlp2x_gelu' is already registered by builtin"):
        vlmkit.register("projector", "mlp2x_gelu", lambda in_dim, out_dim: None)
    assert get("projector", "mlp2x_gelu").origin.source == "builtin"


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownComponentError) as err:
        vlmkit.create("projector", "mlp2_gelu", in_dim=1, out_dim=1)
    message = str(err.value)
    assert "unknown projector 'mlp2_gelu'" in message
    assert "did you mean" in message and "'mlp2x_gelu'" in message


def test_unknown_kind_lists_kinds():
    with pytest.raises(UnknownKindError, match="expected one of"):
        vlmkit.available("encoder")


def test_unknown_keyword_names_key_and_valid_ones():
    with pytest.raises(TypeError) as err:
        vlmkit.create("projector", "mlp2x_gelu", in_dim=2, out_dim=3, hidden=9)
    assert "['hidden']" in str(err.value)
    assert "'in_dim'" in str(err.value) and "'depth'" in str(err.value)
