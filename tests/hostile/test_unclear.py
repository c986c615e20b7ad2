"""Bad input gets an error that names the bad value or file: fuzzed configs and messages, broken
files of every kind a user hands vlmkit, and the command line (one line, no traceback)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from hypothesis import HealthCheck, example, given, settings, strategies as st

import vlmkit
from vlmkit.config import SLOTS, ConfigError
from vlmkit.train.trainer import TrainConfig
from tests.hostile._tiny import INDEX, copy_model, edit_json, save_tiny

REPO = Path(__file__).resolve().parents[2]
TINY = vlmkit.load_config("mgm-tiny").to_dict()

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2, 70), st.floats(allow_nan=False),
                    st.text(max_size=6))
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _kwargs_of(slot: str) -> st.SearchStrategy:
    spec = TINY.get(slot) or {"name": "identity"}
    keys = [k for k in spec if k != "name"] + ["bogus"]
    return st.dictionaries(st.sampled_from(keys), _json, max_size=2)


@st.composite
def _configs(draw):
    config = json.loads(json.dumps(TINY))
    for slot in draw(st.lists(st.sampled_from(SLOTS), max_size=3, unique=True)):
        kind = draw(st.sampled_from(["kwargs", "name", "value"]))
        if kind == "kwargs" and isinstance(config.get(slot), dict):
            config[slot].update(draw(_kwargs_of(slot)))
        elif kind == "name":
            config[slot] = draw(st.sampled_from(sorted(sum(vlmkit.available().values(), []))
                                                + ["nope"]))
        else:
            config[slot] = draw(_json)
    return config


@settings(max_examples=200, deadline=None)
@given(config=_configs())
@example(config={**TINY, "lr_encoder": {**TINY["lr_encoder"], "config": []}})
@example(config={**TINY, "lr_encoder": {**TINY["lr_encoder"], "select_layer": "last"}})
def test_fuzzed_configs_plan_or_raise_config_error(config):
    try:
        vlmkit.plan(config)
    except ConfigError as err:
        assert str(err)


# ---------------------------------------------------------------- messages
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlmkit.build("mgm-tiny").eval()


_message = st.one_of(
    _json,
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot", 3]),
                           "content": st.one_of(st.text(max_size=12), st.integers(), st.none(),
                                                st.just("<image>\nhi"))}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.one_of(st.lists(_message, max_size=4), _json))
def test_fuzzed_messages_reply_or_name_the_problem(model, messages):
    try:
        reply = model.chat(None, messages, max_new_tokens=1)
    except (TypeError, ValueError) as err:
        assert "message" in str(err) or "placeholder" in str(err) or "conversation" in str(err)
        return
    assert isinstance(reply, str)


def test_content_is_checked_before_it_is_read(model):
    with pytest.raises(ValueError, match="message 0 must be a dict with a str 'content'"):
        model.chat(None, [{"role": "user"}])
    with pytest.raises(TypeError, match="messages must be a list of dicts, got str"):
        model.chat(None, "hello")


# ---------------------------------------------------------------- files
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("saved") / "model")


@pytest.mark.parametrize("name", ["config.json", INDEX])
def test_broken_json_in_a_model_directory_names_the_file(saved, tmp_path, name):
    model = copy_model(saved, tmp_path / "model")
    (model / name).write_text('{"config": {')
    with pytest.raises(ValueError, match=f"{model / name} is not valid JSON"):
        vlmkit.VisionLanguageModel.from_pretrained(model)


def test_a_garbage_shard_names_the_file(saved, tmp_path):
    model = copy_model(saved, tmp_path / "model")
    edit_json(model / INDEX, lambda d: d["metadata"].pop("sha256"))  # as saved before checksums
    shard = sorted(set(json.loads((model / INDEX).read_text())["weight_map"].values()))[0]
    (model / shard).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with pytest.raises(ValueError, match=f"{shard} is not a readable safetensors file"):
        vlmkit.VisionLanguageModel.from_pretrained(model)


def test_weights_of_another_shape_name_the_directory(saved, tmp_path):
    model = copy_model(saved, tmp_path / "model")
    edit_json(model / "config.json",
              lambda d: d["config"]["projector"].update(hidden_dim=d["config"]["projector"].get(
                  "hidden_dim", 64) + 1) if "hidden_dim" in d["config"]["projector"] else None)
    edit_json(model / "config.json", lambda d: d["config"]["llm"]["config"].update(vocab_size=300))
    with pytest.raises(ValueError, match=f"{model}: weights do not match the config"):
        vlmkit.VisionLanguageModel.from_pretrained(model)


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("base: mgm-tiny\nimage_grid: [1\nname: x\n")
    with pytest.raises(ConfigError, match=rf"{path} is not valid YAML: .* \(line 3, column"):
        vlmkit.load_config(str(path))


def test_a_relative_base_is_taken_from_the_config_files_folder(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "parent.yaml").write_text("base: mgm-tiny\ndescription: parent\n")
    (tmp_path / "configs" / "child.yaml").write_text("base: parent.yaml\nname: child\n")
    monkeypatch.chdir(tmp_path)
    config = vlmkit.load_config("configs/child.yaml")
    assert config.description == "parent" and config.name == "child"


def test_a_missing_local_tower_is_named_as_a_path():
    config = json.loads(json.dumps(TINY))
    config["lr_encoder"] = {"name": "hf-clip-vit", "pretrained": "/no/such/tower"}
    with pytest.raises(ConfigError) as caught:
        vlmkit.plan(config)
    message = str(caught.value)
    assert "pretrained='/no/such/tower' does not exist" in message
    assert "Repo id" not in message and "describe()" not in message


@pytest.mark.parametrize("value, expected", [("1e-3", 0.001), ("2E-5", 2e-5), (".5", 0.5)])
def test_yaml_1_1_float_strings_are_numbers(value, expected):
    assert TrainConfig(learning_rate=value).learning_rate == expected


@pytest.mark.parametrize("field, value", [("learning_rate", "fast"), ("warmup_ratio", [0.1]),
                                          ("max_steps", "10"), ("seed", 1.5)])
def test_mistyped_train_fields_are_named(field, value):
    with pytest.raises(ValueError, match=f"invalid TrainConfig: {field} must be"):
        TrainConfig(**{field: value})


def test_a_blocked_pickle_in_a_checkpoint_is_named(tmp_path):
    from vlmkit.train.checkpoint import load_tensors_file

    path = tmp_path / "optimizer.pt"
    torch.save({"state": {}, "callback": _Unsafe()}, path)
    with pytest.raises(ValueError, match=f"{path}: refused to load; it holds objects other than"):
        load_tensors_file(path)


class _Unsafe:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_full_disk_keeps_the_old_copy_and_says_so(saved, tmp_path, monkeypatch):
    import vlmkit._checkpoint as checkpoint

    model = copy_model(saved, tmp_path / "model")
    before = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OSError, match=f"no space left to save the model to {model}; the previous"):
        vlmkit.build("mgm-tiny").save_pretrained(model)
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ---------------------------------------------------------------- data
def test_a_record_with_image_123_is_skipped(tmp_path):
    from vlmkit.data.llava import LlavaDataset, write_synthetic

    data = write_synthetic(tmp_path / "d", n=4)
    records = json.loads(data.read_text())
    records[0]["image"] = 123
    records[1]["conversations"] = "not a list"
    data.write_text(json.dumps(records))
    torch.manual_seed(0)
    dataset = LlavaDataset(data, None, vlmkit.build("mgm-tiny"))
    assert len(dataset.lengths()) == 4
    assert dataset[0] is None and dataset[1] is None and dataset[2] is not None
    assert "'image' must be a path or a list of paths, got 123" in dataset.skipped[0].reason


def test_broken_llava_files_name_the_file(tmp_path):
    from vlmkit.data.llava import load_records

    (tmp_path / "a.json").write_text("[{")
    (tmp_path / "b.jsonl").write_text('{"id": 1}\n{oops\n')
    with pytest.raises(ValueError, match=f"{tmp_path / 'a.json'} is not valid JSON"):
        load_records(tmp_path / "a.json")
    with pytest.raises(ValueError, match=f"{tmp_path / 'b.jsonl'} line 2 is not valid JSON"):
        load_records(tmp_path / "b.jsonl")


# ---------------------------------------------------------------- command line
def _vlmkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "VLMKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "vlmkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_command_line_errors_are_one_line(tmp_path):
    from vlmkit.data.llava import write_synthetic

    data = write_synthetic(tmp_path / "data", n=4)
    (tmp_path / "bad.yaml").write_text("model: mgm-tiny\ntrain: {max_steps: 1\n")
    (tmp_path / "lr.yaml").write_text(
        f"model: mgm-tiny\ndata: {data}\ntrain: {{max_steps: 1, learning_rate: fast}}\n")
    (tmp_path / "model.yaml").write_text("base: mgm-tiny\nimage_global: 'no'\n")
    cases = [
        (("train", "bad.yaml"), "bad.yaml is not valid YAML"),
        (("train", "lr.yaml"), "learning_rate must be a number, got 'fast'"),
        (("build", "model.yaml"), "image_global must be True or False, got 'no'"),
        (("chat", "--model", "model.yaml"), "image_global must be True or False, got 'no'"),
    ]
    for args, message in cases:
        proc = _vlmkit(*args, cwd=tmp_path)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)


def test_train_survives_image_123_and_resume_names_a_blocked_pickle(tmp_path):
    from vlmkit.data.llava import write_synthetic

    data = write_synthetic(tmp_path / "data", n=4)
    records = json.loads(data.read_text())
    records[0]["image"] = 123
    data.write_text(json.dumps(records))
    (tmp_path / "run.yaml").write_text(
        f"model: mgm-tiny\ndata: {data}\n"
        "train: {max_steps: 2, per_device_batch_size: 2, global_batch_size: 2, save_steps: 1, "
        "learning_rate: 1e-3, output_dir: out}\n")
    proc = _vlmkit("train", "run.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped samples: 1" in proc.stdout
    torch.save({"hook": _Unsafe()}, tmp_path / "out" / "checkpoint-2" / "optimizer.pt")
    proc = _vlmkit("train", "run.yaml", "--resume", "--no-progress", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "optimizer.pt: refused to load" in proc.stderr


def test_eval_skips_questions_it_cannot_answer_and_names_broken_files(tmp_path, model,
                                                                       monkeypatch):
    from vlmkit.eval.vqa import evaluate, load_questions

    Image.new("RGB", (120, 120)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    questions = [
        {"question_id": 1, "image": 123, "question": "what?", "answers": ["a"]},
        {"question_id": 2, "image": "bomb.png", "question": "what?", "answers": ["a"]},
        {"question_id": 3, "image": None, "question": "a" * 2000, "answers": ["a"]},
        {"question_id": 4, "image": None, "question": "fine?", "answers": ["a"]},
    ]
    report = evaluate(model, questions, tmp_path, max_new_tokens=1, progress=False)
    assert [r["question_id"] for r in report["results"]] == [4]
    reasons = {s["question_id"]: s["error"] for s in report["skipped"]}
    assert reasons[1] == "'image' must be a path"
    assert "decompression bomb" in reasons[2]
    assert "context holds 1024 tokens" in reasons[3]
    (tmp_path / "q.json").write_text(json.dumps([
        {"id": 7, "conversations": ["not a turn", {"from": "human", "value": "q?"}],
         "answers": {"a": 1}}]))
    with pytest.raises(ValueError, match=r"question 7: 'answers' must be a list of strings"):
        load_questions(tmp_path / "q.json")


def test_train_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import vlmkit._checkpoint as checkpoint
    from vlmkit.data.llava import write_synthetic
    from vlmkit.train.command import train_command

    data = write_synthetic(tmp_path / "data", n=8)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint, "save_file", full)
    result = CliRunner().invoke(train_command, ["mgm-tiny", "--data", str(data), "--max-steps", "1",
                                                "--output-dir", str(tmp_path / "out"),
                                                "--no-progress"])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    assert (f"Error: [Errno 28] no space left to save the model to {tmp_path / 'out' / 'final'}; "
            "nothing was written") in result.output


def test_a_broken_trainer_state_names_the_file(tmp_path):
    from vlmkit.train.checkpoint import read_state
    from vlmkit.train.distributed import init_from_env

    (tmp_path / "trainer_state.json").write_text('{"step": 3,')
    with pytest.raises(ValueError, match=f"{tmp_path / 'trainer_state.json'} is not valid JSON"):
        read_state(tmp_path, init_from_env())
