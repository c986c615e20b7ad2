"""Image labels in chat prompts: ``Image 1:<image>`` as MGM's CLI writes them, for MGM presets and
releases in ``chat()`` and ``vlmkit chat``; the ``image_label`` option for other compositions."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import vlmkit
from tests import _mgm_text
from vlmkit._prompt import MGM_IMAGE_LABEL, label_images
from vlmkit.cli import cli
from vlmkit.config import ConfigError, VLMConfig, load_config
from vlmkit.model import VisionLanguageModel


def test_labels_only_with_two_or_more_images():
    assert label_images("USER: <image>\nhi", MGM_IMAGE_LABEL) == "USER: <image>\nhi"
    two = "USER: <image>\n<image>\nhi ASSISTANT: ok</s>USER: <image> more"
    expected = (
        "USER: Image 1:<image>\nImage 2:<image>\nhi ASSISTANT: ok</s>USER: Image 3:<image> more"
    )
    assert label_images(two, MGM_IMAGE_LABEL) == expected == _mgm_text.cli_image_labels(two)
    assert label_images(two, "") == two
    assert label_images("<image><image>", "[{index}] ") == "[1] <image>[2] <image>"


@pytest.mark.parametrize(
    "label, message",
    [
        ("Image {i}:", "'Image {i}:' must be a format whose only field is '{index}'"),
        ("Image:", "'Image:' has no '{index}'"),
        ("Image {index", "'Image {index' must be a format"),
        (3, "image_label must be a str"),
    ],
)
def test_bad_labels_are_named(label, message):
    config = load_config("mgm-tiny").to_dict()
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        VLMConfig.from_dict({**config, "image_label": label})


def test_mgm_presets_label_and_llava_does_not():
    for name in vlmkit.presets():
        expected = "" if name.startswith("llava") else MGM_IMAGE_LABEL
        assert load_config(name).image_label == expected, name


class PromptSpy:
    """Records the prompt ids ``chat()`` hands to ``generate``."""

    def __init__(self, model: VisionLanguageModel) -> None:
        self.ids: list[int] = []
        self._generate = model.generate
        model.generate = self

    def __call__(self, ids, **kwargs):
        self.ids = ids[0].tolist()
        return self._generate(ids, **kwargs)

    def text(self, tokenizer) -> str:
        return tokenizer.decode([i for i in self.ids if i >= 0]).replace("<s>", "")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return vlmkit.build("mgm-tiny").eval()


def test_chat_labels_images_of_mgm_compositions(tiny):
    spy = PromptSpy(tiny)
    images = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    tiny.chat(images, [{"role": "user", "content": "Compare."}], max_new_tokens=1)
    assert "USER: Image 1:\nImage 2:\nCompare. ASSISTANT:" in spy.text(tiny.llm.tokenizer)
    assert spy.ids.count(-200) == 2
    tiny.chat(images, [{"role": "user", "content": "<image> <image> Compare."}], max_new_tokens=1,
              image_label="")  # fmt: skip
    assert "USER:   Compare. ASSISTANT:" in spy.text(tiny.llm.tokenizer)
    tiny.chat(images[:1], [{"role": "user", "content": "Describe."}], max_new_tokens=1)
    assert "Image 1:" not in spy.text(tiny.llm.tokenizer)


def test_other_compositions_choose_a_label(tiny):
    config = tiny.config.copy()
    config.image_label = ""
    plain = VisionLanguageModel.from_config(config)
    spy = PromptSpy(plain)
    images = [Image.new("RGB", (32, 32), "red")] * 2
    plain.chat(images, [{"role": "user", "content": "Compare."}], max_new_tokens=1)
    assert "USER: \n\nCompare." in spy.text(plain.llm.tokenizer)
    plain.chat(images, [{"role": "user", "content": "Compare."}], max_new_tokens=1,
               image_label="<img{index}>")  # fmt: skip
    assert "USER: <img1>\n<img2>\nCompare." in spy.text(plain.llm.tokenizer)


def test_vlmkit_chat_labels_and_its_option(tmp_path, monkeypatch):
    paths = []
    for colour in ("red", "blue"):
        paths.append(tmp_path / f"{colour}.png")
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    prompts: list[str] = []
    generate = VisionLanguageModel.generate

    def spy(self, ids, **kwargs):
        prompts.append(self.llm.tokenizer.decode([i if i >= 0 else 0 for i in ids[0].tolist()]))
        return generate(self, ids, **kwargs)

    monkeypatch.setattr(VisionLanguageModel, "generate", spy)
    base = ["chat", "--model", "mgm-tiny", "--max-new-tokens", "1", "--bridge", "prompt-only",
            "--image", str(paths[0]), "--image", str(paths[1])]  # fmt: skip
    result = CliRunner().invoke(cli, base, input="Compare.\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "Image 1:<unk>\nImage 2:<unk>\nCompare." in prompts[-1]
    args = [*base, "--image-label", "#{index} "]
    result = CliRunner().invoke(cli, args, input="Compare.\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "#1 <unk>\n#2 <unk>\nCompare." in prompts[-1]
    result = CliRunner().invoke(cli, [*base, "--image-label", "Img {n}"], input="/quit\n")
    assert result.exit_code == 2
    assert "error: --image-label: image_label 'Img {n}' must be a format" in result.output
