"""``vlmkit.load``: every kind of model spec, dtype and device, and one-line errors naming the spec."""

from __future__ import annotations

import pytest
import torch
import yaml

import vlmkit
from vlmkit.loading import LoadError


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("saved") / "mgm-tiny"
    vlmkit.build("mgm-tiny").save_pretrained(path)
    return path


def test_a_saved_directory_loads_its_weights(saved_dir):
    torch.manual_seed(0)
    original = vlmkit.build("mgm-tiny")
    torch.manual_seed(1)  # a different random init: only the saved weights can make them equal
    loaded = vlmkit.load(saved_dir)
    assert not loaded.training
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_presets_and_config_files(tmp_path):
    assert vlmkit.load("mgm-tiny").config.name == "mgm-tiny"
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"base": "mgm-tiny", "chat_template": "plain"}))
    assert vlmkit.load(path).config.chat_template == "plain"


@pytest.mark.parametrize("dtype", [torch.bfloat16, "bfloat16"])
def test_dtype_by_name_or_dtype(dtype):
    model = vlmkit.load("mgm-tiny", dtype=dtype, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match=r"unknown dtype 'float8'; expected one of \['bfloat16'"):
        vlmkit.load("mgm-tiny", dtype="float8")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mgm-tinny", "MODEL mgm-tinny: not a preset, config file or model directory"),
        ("/no/such/dir", "MODEL /no/such/dir: no such directory"),
        ("missing.yaml", "MODEL missing.yaml: no such config file"),
    ],
)
def test_bad_specs_raise_load_error_naming_them(spec, message):
    with pytest.raises(LoadError) as err:
        vlmkit.load(spec, what="MODEL")
    assert str(err.value).startswith(message)


def test_directories_that_are_not_models(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"something": 1}')
    with pytest.raises(LoadError, match="neither a vlmkit model's nor an official MGM"):
        vlmkit.load(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="the directory has no config.json"):
        vlmkit.load(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(LoadError, match="config.json is not valid JSON"):
        vlmkit.load(tmp_path / "broken")
