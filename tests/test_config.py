"""Config loading: dicts, YAML/JSON files, presets, ``base:`` chains, unknown keys."""

from __future__ import annotations

import json

import pytest
import yaml

import vlmkit
from vlmkit.config import ComponentSpec, ConfigError, VLMConfig, load_config

BASIC = {
    "lr_encoder": {"name": "hf-clip-vit", "image_size": 32},
    "projector": "mlp2x_gelu",
    "llm": {"name": "hf-causal-lm", "tokenizer": "byte-level"},
}


def test_from_dict_parses_slots():
    cfg = load_config(BASIC)
    assert cfg.lr_encoder == ComponentSpec("hf-clip-vit", {"image_size": 32})
    assert cfg.projector == ComponentSpec("mlp2x_gelu", {})
    assert cfg.miner == ComponentSpec("identity", {})
    assert cfg.hr_encoder is None and cfg.bridge is None
    assert cfg.num_views == 1


def test_round_trip_through_dict():
    cfg = load_config({**BASIC, "image_grid": 2, "image_global": True})
    again = VLMConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.num_views == 5


def test_unknown_top_level_key_names_it_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config({**BASIC, "image_grd": 2})
    message = str(err.value)
    assert "['image_grd']" in message and "did you mean 'image_grid'" in message
    assert "Valid keys" in message and "'chat_template'" in message


def test_missing_slot_and_bad_spec():
    with pytest.raises(ConfigError, match=r"missing required slot\(s\) \['llm'\]"):
        load_config({k: v for k, v in BASIC.items() if k != "llm"})
    with pytest.raises(ConfigError, match="missing 'name'"):
        load_config({**BASIC, "projector": {"in_dim": 3}})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_files_and_base_chain(tmp_path, suffix):
    base = tmp_path / f"base{suffix}"
    dump = json.dumps if suffix == ".json" else yaml.safe_dump
    base.write_text(dump(BASIC))
    child = tmp_path / f"child{suffix}"
    child.write_text(dump({"base": str(base), "lr_encoder": {"image_size": 64}, "chat_template": "plain"}))
    cfg = load_config(child)
    assert cfg.lr_encoder == ComponentSpec("hf-clip-vit", {"image_size": 64})
    assert cfg.chat_template == "plain"
    assert cfg.llm.kwargs == {"tokenizer": "byte-level"}


def test_base_chain_loop_is_reported(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump({"base": str(b)}))
    b.write_text(yaml.safe_dump({"base": str(a)}))
    with pytest.raises(ConfigError, match="loops"):
        load_config(a)


def test_unknown_preset_names_value_and_expected():
    with pytest.raises(ConfigError) as err:
        load_config("mgm-7bb")
    assert "unknown preset 'mgm-7bb'" in str(err.value)
    assert "mgm-7b" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_every_preset_loads():
    names = vlmkit.presets()
    assert names, "vlmkit ships presets"
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name
