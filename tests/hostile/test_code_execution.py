"""Nothing in a model directory runs code: ``trust_remote_code`` in a saved ``config.json`` is
ignored by ``from_pretrained`` and ``vlmkit chat --model DIR``; saved slots name no
``pretrained`` source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from transformers import CLIPVisionConfig, CLIPVisionModel

import vlmkit
from vlmkit._checkpoint import read_config
from vlmkit.config import SLOTS
from tests.hostile._tiny import code_directory, copy_model, edit_json, save_tiny

REPO = Path(__file__).resolve().parents[2]

LOAD_BOTH_WAYS = """
import json, sys
import vlmkit
from vlmkit.loading import LoadError
out = {}
try:
    vlmkit.VisionLanguageModel.from_pretrained(sys.argv[1])
    out["from_pretrained"] = "loaded"
except Exception as err:
    out["from_pretrained"] = type(err).__name__ + ": " + str(err)
try:
    vlmkit.load(sys.argv[1], what="--model")
    out["chat"] = "loaded"
except LoadError as err:
    out["chat"] = str(err)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("saved") / "model")


def test_remote_code_named_by_a_saved_config_never_runs(saved, tmp_path):
    marker = tmp_path / "marker.txt"
    model = copy_model(saved, tmp_path / "model")
    code = code_directory(tmp_path, marker)

    def point_llm_at_code(data):
        llm = data["config"]["llm"]
        llm.pop("config")
        llm.update(pretrained=str(code), trust_remote_code=True)
    edit_json(model / "config.json", point_llm_at_code)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", LOAD_BOTH_WAYS, str(model)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not marker.exists(), out
    assert out["from_pretrained"] != "loaded" and out["chat"] != "loaded"
    assert "trust_remote_code" in out["from_pretrained"]
    assert out["chat"].startswith(f"--model {model}: cannot load")


def test_saved_slots_name_no_source_and_no_remote_code(saved):
    config = json.loads((saved / "config.json").read_text())["config"]
    for slot in SLOTS:
        spec = config.get(slot)
        if isinstance(spec, dict):
            assert spec.get("pretrained") is None, slot
            assert not spec.get("trust_remote_code"), slot


def test_a_tower_loaded_from_a_folder_is_saved_without_it(tmp_path):
    tower = tmp_path / "clip"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, image_size=64, patch_size=8)
                    ).save_pretrained(tower)
    config = vlmkit.load_config("mgm-tiny").to_dict()
    config["lr_encoder"] = {"name": "hf-clip-vit", "pretrained": str(tower)}
    model = vlmkit.build(config)
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["config"]
    assert saved["lr_encoder"]["pretrained"] is None
    for file in tower.iterdir():
        file.unlink()
    tower.rmdir()  # the saved model must not need the tower folder any more
    loaded = vlmkit.VisionLanguageModel.from_pretrained(tmp_path / "saved")
    for name, tensor in model.lr_encoder.state_dict().items():
        assert loaded.lr_encoder.state_dict()[name].equal(tensor), name


@settings(max_examples=60, deadline=None)
@given(claims=st.dictionaries(st.sampled_from(SLOTS),
                              st.one_of(st.booleans(), st.integers(), st.text(max_size=5),
                                        st.none()), min_size=1),
       allow=st.booleans())
def test_only_the_callers_argument_decides_remote_code(tmp_path_factory, claims, allow):
    folder = tmp_path_factory.mktemp("cfg")
    config = {slot: {"name": "x", "trust_remote_code": value} for slot, value in claims.items()}
    (folder / "config.json").write_text(json.dumps({"config": config}))
    read = read_config(folder, trust_remote_code=allow)
    assert {slot: read[slot]["trust_remote_code"] for slot in claims} == {s: allow for s in claims}


def test_tokenizer_kwargs_cannot_turn_on_remote_code(tmp_path):
    marker = tmp_path / "marker.txt"
    folder = code_directory(tmp_path, marker)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": ["remote_config.RemoteConfig", None]}}))
    llm = vlmkit.create("llm", "hf-causal-lm", config=vlmkit.load_config("mgm-tiny").llm.kwargs["config"],
                        tokenizer=str(folder), tokenizer_kwargs={"trust_remote_code": True})
    with pytest.raises(ValueError, match="trust_remote_code"):
        llm.tokenizer
    assert not marker.exists()
