"""No silent wrong results: high-bit-depth images keep their brightness, over-long prompts and
mistyped config fields are refused, a training run that learned nothing fails, the skipped-sample
report survives a resume, incomplete checkpoints are not resumed from, flipped bytes are caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import vlmkit
from vlmkit._checkpoint import load_state
from vlmkit.config import ConfigError
from vlmkit.data.processor import ImageProcessor, load_image
from vlmkit.train import checkpoint as ckpt
from vlmkit.train.trainer import TrainConfig, Trainer, TrainingError
from tests.hostile._tiny import INDEX, copy_model, save_tiny
from tests.train.conftest import dataset, tiny_data, tiny_model  # noqa: F401 - fixture

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- images
def _deep_image(mode: str, grey: np.ndarray) -> Image.Image:
    """The 8-bit ``grey`` values stored at the bit depth of ``mode``."""
    if mode == "F":
        return Image.fromarray((grey / 255.0).astype(np.float32))
    wide = grey.astype(np.uint16) * 257
    return Image.fromarray(wide) if mode == "I;16" else Image.fromarray(wide.astype(np.int32))


@FUZZ
@given(mode=st.sampled_from(["I;16", "I", "F"]), width=st.integers(1, 40), height=st.integers(1, 40),
       seed=st.integers(0, 2**16), aspect=st.sampled_from(["pad", "resize", "crop"]))
def test_deep_images_give_the_pixels_of_their_8_bit_version(tmp_path, mode, width, height, seed,
                                                             aspect):
    grey = np.random.default_rng(seed).integers(0, 256, (height, width)).astype(np.uint8)
    image = _deep_image(mode, grey)
    assert image.mode == mode
    path = tmp_path / ("deep.png" if mode == "I;16" else "deep.tiff")
    image.save(path)
    processor = ImageProcessor(lr_size=16, aspect=aspect)
    expected = processor.pixels(Image.fromarray(grey).convert("RGB"))
    torch.testing.assert_close(processor.pixels(load_image(path)), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(processor.pixels(image), expected, rtol=0, atol=1e-5)


def test_deep_images_with_values_outside_their_range_are_named():
    with pytest.raises(ValueError, match="mode-F image with values from -1 to 2"):
        ImageProcessor(lr_size=16).pixels(Image.fromarray(np.array([[-1.0, 2.0]], np.float32)))


@FUZZ
@given(mode=st.sampled_from(["1", "L", "P", "RGBA", "CMYK", "YCbCr", "LA", "La", "PA", "LAB",
                             "HSV", "RGBX", "I;16B"]),
       size=st.tuples(st.integers(1, 30), st.integers(1, 30)))
def test_every_pil_mode_gives_pixels_or_a_named_error(mode, size):
    image = Image.new(mode, size)
    pixels = ImageProcessor(lr_size=8, aspect="resize").pixels(image)
    assert pixels.shape == (3, 8, 8) and torch.isfinite(pixels).all()


# ---------------------------------------------------------------- prompts
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlmkit.build("mgm-tiny").eval()


@pytest.mark.parametrize("words", [3000, 8000])
def test_a_prompt_longer_than_the_context_is_refused(model, words):
    context = model.llm.context_length
    assert context == 1024
    text = "a" * words  # byte-level tokenizer: one token per byte
    with pytest.raises(ValueError, match=f"the LLM's context holds {context} tokens"):
        model.chat(None, [{"role": "user", "content": text}], max_new_tokens=4)
    with pytest.raises(ValueError, match=f"the input is {words} tokens"):
        model(torch.ones(1, words, dtype=torch.long))


def test_prompt_plus_new_tokens_past_the_context_is_refused(model):
    with pytest.raises(ValueError, match="and 200 new tokens.*lower max_new_tokens"):
        model.chat(None, [{"role": "user", "content": "a" * 900}], max_new_tokens=200)
    assert isinstance(model.chat(None, [{"role": "user", "content": "hi"}], max_new_tokens=2), str)


# ---------------------------------------------------------------- config fields
@pytest.mark.parametrize("key, value, message", [
    ("image_grid", 2.5, "image_grid must be an integer, got 2.5"),
    ("image_grid", "2", "image_grid must be an integer, got '2'"),
    ("image_grid", True, "image_grid must be an integer, got True"),
    ("image_grid", 0, "image_grid must be an integer >= 1, got 0"),
    ("image_global", "no", "image_global must be True or False, got 'no'"),
    ("image_global", 1, "image_global must be True or False, got 1"),
    ("image_aspect_ratio", "squash", "image_aspect_ratio must be one of"),
    ("training", ["pretrain"], "training must be a mapping"),
])
def test_mistyped_model_fields_are_named(key, value, message):
    config = vlmkit.load_config("mgm-tiny").to_dict()
    config[key] = value
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        vlmkit.plan(config)


def test_a_config_built_in_code_is_checked_too():
    from vlmkit.config import ComponentSpec, VLMConfig

    with pytest.raises(ConfigError, match="image_global must be True or False, got 'no'"):
        VLMConfig(lr_encoder=ComponentSpec("hf-clip-vit"), projector=ComponentSpec("linear"),
                  llm=ComponentSpec("hf-causal-lm"), image_global="no")


@pytest.mark.parametrize("field, value, message", [
    ("bf16", "no", "bf16 must be True or False or None, got 'no'"),
    ("adam_betas", [0.9], "adam_betas must be two numbers"),
    ("lr_multipliers", {"projector": "2"}, "lr_multipliers must map slots to numbers"),
    ("chat_template", "vicuna_v2", "chat_template: unknown chat template 'vicuna_v2'"),
])
def test_mistyped_train_fields_are_refused_not_guessed(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_plan_refuses_an_unknown_chat_template():
    config = vlmkit.load_config("mgm-tiny").to_dict()
    config["chat_template"] = "vicuna_v2"
    with pytest.raises(ConfigError, match="chat_template: unknown chat template 'vicuna_v2'"):
        vlmkit.plan(config)


_value = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=False),
                   st.text(max_size=6), st.lists(st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(["image_grid", "image_global", "image_aspect_ratio",
                                               "chat_template", "name", "description", "training"]),
                              _value, min_size=1))
def test_fuzzed_model_fields_load_with_their_types_or_fail_by_name(fields):
    config = {**vlmkit.load_config("mgm-tiny").to_dict(), **fields}
    try:
        loaded = vlmkit.load_config(config)
    except ConfigError as err:
        assert any(key in str(err) for key in fields)
        return
    assert type(loaded.image_grid) is int and loaded.image_grid >= 1
    assert type(loaded.image_global) is bool
    assert loaded.image_aspect_ratio in ("pad", "resize", "crop")
    assert isinstance(loaded.chat_template, str) and isinstance(loaded.training, dict)


# ---------------------------------------------------------------- training
def _train_config(model, out, **kw):
    return TrainConfig.from_preset(model.config, "finetune", progress=False, warmup_ratio=0.0,
                                   output_dir=str(out), **kw)


def _records(tiny_data, bad):
    records = json.loads(tiny_data.read_text())
    for i in bad:
        records[i]["image"] = f"images/missing-{i}.png"
    return records


def _data(model, records, tiny_data, path):
    path.write_text(json.dumps(records))
    data = dataset(model, path)
    data.image_folder = tiny_data.parent
    return data


def test_a_run_where_every_sample_was_skipped_fails(tiny_data, tmp_path):
    records = _records(tiny_data, range(8))
    for record in records:  # the text-only ones too
        record["conversations"] = [{"from": "gpt", "value": "no question"}]
    model = tiny_model()
    data = _data(model, records, tiny_data, tmp_path / "data.json")
    with pytest.raises(TrainingError, match="no sample had anything to learn from in steps 1-2"):
        Trainer(model, data, _train_config(model, tmp_path / "out", max_steps=2)).train()
    assert not (tmp_path / "out" / "final").exists()
    assert len((tmp_path / "out" / "skipped.jsonl").read_text().splitlines()) == 8


def test_the_skipped_report_after_a_resume_equals_the_uninterrupted_one(tiny_data, tmp_path):
    records = _records(tiny_data, [0, 3, 5])
    kw = {"max_steps": 4, "per_device_batch_size": 2, "global_batch_size": 2, "save_steps": 1}
    model = tiny_model()
    Trainer(model, _data(model, records, tiny_data, tmp_path / "d.json"),
            _train_config(model, tmp_path / "full", **kw)).train()
    full = (tmp_path / "full" / "skipped.jsonl").read_text()
    assert len(full.splitlines()) == 3
    for step in (1, 2, 3):
        out = tmp_path / f"resumed{step}"
        out.mkdir()
        shutil.copytree(tmp_path / "full" / f"checkpoint-{step}", out / f"checkpoint-{step}")
        other = tiny_model(seed=5)
        Trainer(other, _data(other, records, tiny_data, tmp_path / "d.json"),
                _train_config(other, out, **kw)).train(resume_from=True)
        assert (out / "skipped.jsonl").read_text() == full, step


@pytest.mark.parametrize("removed", ["optimizer.pt", "model/model.safetensors.index.json",
                                     "scheduler.pt", "trainer_state.json"])
def test_a_half_deleted_checkpoint_is_not_resumed_from(tmp_path, removed):
    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        (folder / "model").mkdir(parents=True)
        for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json",
                     "model/model.safetensors.index.json"):
            (folder / name).write_text("{}")
    (tmp_path / "checkpoint-4" / removed).unlink()
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


# ---------------------------------------------------------------- corrupted weights
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("saved") / "model")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 1000), seed=st.integers(0, 2**16))
def test_flipped_payload_bytes_are_caught(saved, tmp_path_factory, count, seed):
    model = copy_model(saved, tmp_path_factory.mktemp("flip") / "model")
    shard = sorted(set(json.loads((model / INDEX).read_text())["weight_map"].values()))[0]
    raw = bytearray((model / shard).read_bytes())
    payload = 8 + int.from_bytes(raw[:8], "little")
    rng = np.random.default_rng(seed)
    for position in rng.choice(np.arange(payload, len(raw)), size=count, replace=False):
        raw[position] ^= 0xFF
    (model / shard).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{shard} is corrupted: its SHA-256 differs"):
        load_state(model)
