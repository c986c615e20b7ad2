"""Every file a model directory names resolves inside it: shards in the index (vlmkit's loader
and ``compat.mgm``), the tokenizer folder; index files of any shape fail with the file's name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import save_file

from vlmkit._checkpoint import load_state, read_config
from vlmkit._files import UnsafePathError, inside
from vlmkit.compat.mgm import MGMFormatError, weight_files
from tests.hostile._tiny import INDEX, copy_model, edit_json, save_tiny


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("saved") / "model")


def _outside_shard(root: Path) -> Path:
    outside = root / "outside"
    outside.mkdir()
    save_file({"planted": torch.ones(2)}, str(outside / "x.safetensors"))
    return outside / "x.safetensors"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_shard_outside_the_model_directory_is_refused(saved, tmp_path, how):
    model = copy_model(saved, tmp_path / "model")
    planted = _outside_shard(tmp_path)
    name = {"dotdot": "../outside/x.safetensors", "absolute": str(planted)}.get(how, "link.safetensors")
    if how == "symlink":
        os.symlink(planted, model / name)
    edit_json(model / INDEX, lambda d: d["weight_map"].update({"planted": name}))
    with pytest.raises(UnsafePathError, match=INDEX) as caught:
        load_state(model)
    assert repr(name) in str(caught.value)


def test_a_tokenizer_folder_linked_outside_is_refused(saved, tmp_path):
    model = copy_model(saved, tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    (model / "tokenizer").rename(elsewhere)
    os.symlink(elsewhere, model / "tokenizer")
    with pytest.raises(UnsafePathError, match="points outside"):
        read_config(model)


def _mgm_release(root: Path, shard_name: str) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"mm_vision_tower": "clip"}))
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.mm_projector.0.weight": shard_name}}))
    return root


@pytest.mark.parametrize("name", ["../outside/x.safetensors", "ABSOLUTE"])
def test_mgm_release_shards_must_lie_inside_the_release(tmp_path, name):
    planted = _outside_shard(tmp_path)
    name = str(planted) if name == "ABSOLUTE" else name
    release = _mgm_release(tmp_path / "release", name)
    with pytest.raises(MGMFormatError, match="model.safetensors.index.json"):
        weight_files(release)


_segment = st.sampled_from(["..", ".", "a", "b.safetensors", "", "~", "\\..", "/", "x y"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_segment, min_size=1, max_size=6), absolute=st.booleans())
def test_inside_never_returns_a_path_outside(tmp_path, parts, absolute):
    name = ("/" if absolute else "") + "/".join(parts)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    try:
        path = inside(root, name, source=root / INDEX)
    except UnsafePathError as err:
        assert str(root / INDEX) in str(err)
        return
    resolved = path.resolve()
    assert resolved == root.resolve() or root.resolve() in resolved.parents


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_index = st.one_of(
    _json,
    st.fixed_dictionaries({"weight_map": _json}),
    st.fixed_dictionaries({"weight_map": st.dictionaries(st.text(max_size=6), _json, max_size=3),
                           "metadata": _json}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=_index)
def test_any_index_file_fails_with_its_name(tmp_path, index):
    model = tmp_path / "fuzzed"
    model.mkdir(exist_ok=True)
    (model / INDEX).write_text(json.dumps(index))
    try:
        load_state(model)
    except (ValueError, FileNotFoundError) as err:
        assert str(model) in str(err)
