"""``vlmkit chat`` and ``vlmkit generate-image``, and the :class:`ChatSession` behind them.

An untrained ``mgm-tiny`` never writes ``<h>...</h>``, so the ``/gen`` path is exercised with a
real ``mgm-tiny`` whose weights were trained here for a few dozen steps to answer this one
request with ``<h>a red square</h>``: the reply comes from the model's own ``generate`` (vision
tower, mining, projector, LLM), is parsed by the protocol and rendered by the diffusers plugin's
tiny SDXL pipeline loaded from disk. What it proves: the pieces are wired end to end; not that
a model writes good prompts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

import vlmkit
from vlmkit.chat import ChatError, ChatSession
from vlmkit.cli import cli
from vlmkit.data.conversation import append_generation_request, build_example

REQUEST = "Draw a red square."
TARGET = "<h>a red square</h>"


@pytest.fixture(scope="module")
def red_image(tmp_path_factory):
    image = Image.new("RGB", (96, 80), "white")
    ImageDraw.Draw(image).rectangle((20, 20, 70, 60), fill="red")
    path = tmp_path_factory.mktemp("img") / "red.png"
    image.save(path)
    return path


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, red_image):
    """mgm-tiny trained to answer ``<image>\\nDraw a red square. <GEN>`` with ``TARGET``; saved."""
    torch.manual_seed(0)
    model = vlmkit.build("mgm-tiny")
    messages = append_generation_request([{"role": "user", "content": "<image>\n" + REQUEST}])
    example = build_example([*messages, {"role": "assistant", "content": TARGET}],
                            model.llm.tokenizer, model.config.chat_template)
    image = Image.open(red_image).convert("RGB")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(300):
        loss = model(example["input_ids"][None], labels=example["labels"][None], images=[image]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05
    path = tmp_path_factory.mktemp("trained") / "mgm-tiny-gen"
    model.eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    from vlmkit_diffusers.tiny import random_sdxl_pipeline

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sdxl")
    random_sdxl_pipeline().save_pretrained(path)
    return path


def _run(args, stdin=""):
    return CliRunner().invoke(cli, args, input=stdin)


def test_gen_on_mgm_tiny_saves_an_image_from_the_tiny_pipeline(trained_dir, pipeline_dir, red_image, tmp_path):
    out = tmp_path / "out"
    result = _run(["chat", "--model", str(trained_dir), "--image", str(red_image), "--pipeline",
                   str(pipeline_dir), "--steps", "2", "--size", "32", "--out-dir", str(out)],
                  f"/gen {REQUEST}\n/quit\n")
    assert result.exit_code == 0, result.output
    assert TARGET in result.output  # the streamed reply
    assert "image prompt: a red square" in result.output
    saved = out / "vlmkit-gen-1.png"
    assert f"saved {saved}" in result.output
    image = Image.open(saved)
    assert image.size == (32, 32)
    # The file is the pipeline's rendering of the model's prompt (same seed), not of another text.
    bridge = vlmkit.create("bridge", "diffusers", pretrained=str(pipeline_dir), steps=2, size=32)
    assert np.array_equal(np.asarray(image), np.asarray(bridge("a red square", seed=0)[0]))
    assert not np.array_equal(np.asarray(image), np.asarray(bridge("a blue circle", seed=0)[0]))


def test_gen_without_an_image_prompt_says_so(red_image, tmp_path):
    result = _run(["chat", "--model", "mgm-tiny", "--bridge", "prompt-only", "--max-new-tokens", "6",
                   "--out-dir", str(tmp_path)], f"/image {red_image}\n/gen\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "no image prompt" in result.output
    assert list(tmp_path.iterdir()) == []


def test_generate_image_command(trained_dir, pipeline_dir, red_image, tmp_path):
    result = _run(["generate-image", "a red square", "--pipeline", str(pipeline_dir), "--steps", "2",
                   "--size", "32", "--out", str(tmp_path / "direct")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "direct.png").size == (32, 32)
    result = _run(["generate-image", REQUEST, "--model", str(trained_dir), "--image", str(red_image),
                   "--bridge", "prompt-only", "--out", str(tmp_path / "via-model")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "via-model.txt").read_text() == "a red square\n"


class Collect:
    """A streamer that records what ``generate`` streams (decoded like the CLI's)."""

    def __init__(self, tokenizer):
        from transformers import TextStreamer

        self.text = []
        outer = self

        class _S(TextStreamer):
            def on_finalized_text(self, text, stream_end=False):
                outer.text.append(text)

        self.streamer = _S(tokenizer, skip_prompt=True, skip_special_tokens=True)


def test_session_multi_turn_history_images_and_reset(red_image):
    torch.manual_seed(0)
    model = vlmkit.build("mgm-tiny").eval()
    session = ChatSession(model, max_new_tokens=6)
    session.add_image(red_image)
    collect = Collect(model.llm.tokenizer)
    first = session.ask("What is this?", collect.streamer)
    assert "".join(collect.text).strip() == first
    second = session.ask("And the colour?")
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert session.messages[0]["content"] == "<image>\nWhat is this?"
    assert session.messages[2]["content"] == "And the colour?"
    image = Image.open(red_image).convert("RGB")
    assert second == model.chat([image], session.messages[:3], max_new_tokens=6)
    session.reset()
    assert session.messages == [] and session.images == []
    with pytest.raises(ChatError, match="no bridge"):
        session.generate("x")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "mgm-tiny", "--image", "/no/such.png"], "error: image file not found: /no/such.png"),
        (["--model", "mgm-tiny", "--image", "{bad}"], "unsupported image format"),
        (["--model", "/no/such/model-dir"], "error: --model /no/such/model-dir: no such directory"),
        (["--model", "mgm-tinny"], "not a preset, config file or model directory"),
    ],
)
def test_errors_are_one_line(args, message, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    args = [str(bad) if a == "{bad}" else a for a in args]
    result = _run(["chat", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_in_session_errors_do_not_end_it(tmp_path):
    result = _run(["chat", "--model", "mgm-tiny", "--bridge", "prompt-only", "--max-new-tokens", "2"],
                  "/image /no/such.png\n/frobnicate\nlook: <image>\n/reset\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "error: image file not found: /no/such.png" in result.output
    assert "error: unknown command '/frobnicate'" in result.output
    assert "error: the messages have 1 <image> placeholder(s) but 0 image(s)" in result.output
    assert "(conversation cleared)" in result.output


def test_unloadable_model_dirs_are_one_line(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"config": {"llm": "hf-causal-lm"}}')
    mgm = tmp_path / "mgm"  # looks like an official MGM checkpoint, but holds no weights
    mgm.mkdir()
    (mgm / "config.json").write_text('{"mm_vision_tower": "openai/clip-vit-large-patch14-336"}')
    for path in (broken, mgm, tmp_path / "empty"):
        path.mkdir(exist_ok=True)
        result = _run(["chat", "--model", str(path)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: --model {path}") or f"{path}" in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_bridge_choice():
    from types import SimpleNamespace

    from vlmkit.bridges.prompt import PromptOnlyBridge
    from vlmkit.chat import make_bridge

    own = PromptOnlyBridge()
    assert make_bridge(SimpleNamespace(bridge=own), None, None) is own  # the model's bridge slot
    assert isinstance(make_bridge(SimpleNamespace(bridge=own), "prompt-only", None), PromptOnlyBridge)
    chosen = make_bridge(SimpleNamespace(bridge=None), None, "/some/pipeline")
    assert type(chosen).__name__ == "DiffusersBridge" and chosen.pretrained == "/some/pipeline"
    with pytest.raises(ChatError, match="unknown bridge 'nope'"):
        make_bridge(None, "nope", None)
