"""The diffusers bridge as vlmkit finds it: through the ``vlmkit`` entry point of the installed
``vlmkit-diffusers`` distribution, rendering with a tiny SDXL pipeline saved to disk and loaded by path."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import vlmkit  # noqa: E402
from vlmkit.cli import cli  # noqa: E402
from vlmkit.components import get  # noqa: E402


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    from vlmkit_diffusers.tiny import random_sdxl_pipeline

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-sdxl")
    random_sdxl_pipeline().save_pretrained(path)
    return path


def test_registered_through_the_entry_point():
    assert "diffusers" in vlmkit.available("bridge")
    origin = get("bridge", "diffusers").origin
    assert origin.source == "plugin"
    assert origin.distribution == "vlmkit-diffusers"
    assert origin.entry_point == "diffusers"
    assert not [f for f in vlmkit.plugin_failures() if "diffusers" in f.distribution]


def test_vlmkit_list_shows_the_plugin_origin():
    result = CliRunner().invoke(cli, ["list", "--kind", "bridge"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.split()[:1] == ["diffusers"])
    assert "plugin vlmkit-diffusers" in line


def test_tokenizer_matches_open_clip():
    from open_clip.tokenizer import SimpleTokenizer
    from vlmkit_diffusers.tiny import clip_tokenizer

    text = "A photo of a red cube, on a wooden table!"
    ids = clip_tokenizer()(text)["input_ids"]
    assert ids[0] == 49406 and ids[-1] == 49407
    assert ids[1:-1] == SimpleTokenizer().encode(text)


def test_loads_a_pipeline_by_path_and_renders(pipeline_dir):
    bridge = vlmkit.create("bridge", "diffusers", pretrained=str(pipeline_dir), steps=2, size=32)
    first = bridge("a red square", seed=1)
    assert len(first) == 1 and first[0].size == (32, 32) and first[0].mode == "RGB"
    assert type(bridge.pipeline).__name__ == "StableDiffusionXLPipeline"
    again = bridge("a red square", seed=1)
    other = bridge("a red square", seed=2, size=64)
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    assert other[0].size == (64, 64)


def test_loaded_weights_are_the_saved_ones(pipeline_dir):
    from diffusers import StableDiffusionXLPipeline

    reference = StableDiffusionXLPipeline.from_pretrained(pipeline_dir)
    bridge = vlmkit.create(
        "bridge", "diffusers", pretrained=str(pipeline_dir), pipeline_class="StableDiffusionXLPipeline",
        device="cpu",  # the reference runs on the CPU in float32
    )
    expected = reference(
        prompt="a blue circle", num_inference_steps=2, height=32, width=32, guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    got = bridge("a blue circle", seed=3, steps=2, size=32)[0]
    assert np.array_equal(np.asarray(expected), np.asarray(got))


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not a diffusers pipeline class"):
        vlmkit.create("bridge", "diffusers", pretrained=str(tmp_path), pipeline_class="Nope")("x")
    with pytest.raises(ValueError, match=str(tmp_path / "missing")):
        vlmkit.create("bridge", "diffusers", pretrained=str(tmp_path / "missing"))("x")
    with pytest.raises(ValueError, match="non-empty image prompt"):
        vlmkit.create("bridge", "diffusers", config="tiny")("  ")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        vlmkit.create("bridge", "diffusers", steps=0)
