"""Reading a saved model directory's config: bare-name slots, the saved tokenizer, bad files."""

import json

import pytest

from vlmkit._checkpoint import TOKENIZER_DIR, read_config


def test_saved_tokenizer_path_is_resolved_and_bare_name_slots_are_kept(tmp_path):
    config = {"lr_encoder": "hf-clip-vit", "projector": "linear",
              "llm": {"name": "hf-causal-lm", "tokenizer": TOKENIZER_DIR}}
    (tmp_path / "config.json").write_text(json.dumps({"config": config}))
    got = read_config(tmp_path)
    assert got["llm"]["tokenizer"] == str(tmp_path / TOKENIZER_DIR)
    assert got["lr_encoder"] == "hf-clip-vit"

    config["llm"] = "hf-causal-lm"  # a bare component name used to raise AttributeError
    (tmp_path / "config.json").write_text(json.dumps({"config": config}))
    assert read_config(tmp_path)["llm"] == "hf-causal-lm"


@pytest.mark.parametrize("content", [[1, 2], {"config": "mgm-tiny"}, {"weights": {}}])
def test_a_config_json_without_a_config_mapping_is_named(tmp_path, content):
    (tmp_path / "config.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"config.json has no 'config' mapping"):
        read_config(tmp_path)


def test_a_missing_config_json_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a vlmkit model directory: config.json"):
        read_config(tmp_path)
