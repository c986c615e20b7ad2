"""``VisionLanguageModel`` on ``mgm-tiny``: images to visual tokens (PIL, pixels, HD), splicing with
labels, several images, text only, batched generation, chat, save/load, and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vlmkit
from tests import _mgm
from vlmkit.data.conversation import IGNORE_INDEX, IMAGE_TOKEN_INDEX, build_example

HR = 128  # mgm-tiny: CLIP 64 px (8x8 = 64 tokens x 32), ConvNeXt 128 px (32x32 map x 168)


def _build(**overrides):
    torch.manual_seed(0)
    config = vlmkit.load_config("mgm-tiny").to_dict()
    for key, value in overrides.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    model = vlmkit.build(config).eval()
    _mgm.randomise(model.miner)  # LayerNorms away from 1/0, so that no weight can hide
    _mgm.randomise(model.projector, 0.1)
    return model


@pytest.fixture(scope="module")
def model():
    return _build()


def _image(seed: int, size=(90, 60)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _parts(model) -> dict:
    return {
        "clip_vision": model.lr_encoder.vision_tower,
        "stem": model.hr_encoder.vision_stem,
        "stages": model.hr_encoder.vision_stages,
        "query": model.miner.vlm_uni_query_projector,
        "key": model.miner.vlm_uni_aux_projector,
        "value": model.miner.vlm_uni_val_projector,
        "projector": model.projector,
    }


@torch.no_grad()
def test_encode_images_from_pil_and_from_pixels(model):
    images = [_image(1), _image(2, (40, 80))]
    tokens = model.encode_images(images)
    assert tokens.shape == (2, 64, 64) == (2, model.num_visual_tokens, 64)
    pixels = torch.stack([model.processor.pixels(im) for im in images])
    assert pixels.shape == (2, 3, HR, HR)
    torch.testing.assert_close(model.encode_images(pixels), tokens, rtol=0, atol=0)
    torch.testing.assert_close(model.encode_images(images[1]), tokens[1:], rtol=0, atol=0)
    reference = _mgm.visual_tokens(pixels, lr_size=64, **_parts(model))
    torch.testing.assert_close(tokens, reference, rtol=0, atol=1e-5 * reference.abs().max().item())


@torch.no_grad()
def test_hd_path_equals_mgm_hd():
    hd = _build(image_grid=2, image_global=True)
    assert hd.num_views == 5 and hd.num_visual_tokens == 5 * 64
    pixels = torch.randn(2, 3, HR, HR)
    expected = _mgm.visual_tokens(pixels, lr_size=64, grid=2, image_global=True, **_parts(hd))
    hd.miner.backend = "reference"
    torch.testing.assert_close(hd.encode_images(pixels), expected, rtol=0, atol=0)
    hd.miner.backend = "auto"
    atol = 1e-5 * expected.abs().max().item()  # the fast backend folds the projections
    torch.testing.assert_close(hd.encode_images(pixels), expected, rtol=0, atol=atol)


@torch.no_grad()
def test_doubling_only_the_hr_resolution_keeps_the_token_count(model):
    doubled = _build(hr_encoder={"image_size": 2 * HR})
    assert doubled.num_visual_tokens == model.num_visual_tokens == 64
    assert doubled.encode_images([_image(3)]).shape == model.encode_images([_image(3)]).shape
    assert doubled.processor.input_size == 2 * HR


def _ids(model, text: str) -> list[int]:
    return model.llm.tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def test_forward_with_labels_masks_images_and_prompt(model):
    messages = [
        {"role": "user", "content": "<image>\nWhat is it?"},
        {"role": "assistant", "content": "A cat."},
    ]
    example = build_example(messages, model.llm.tokenizer, "vicuna_v1")
    ids, labels = example["input_ids"], example["labels"]
    image_at = int((ids == IMAGE_TOKEN_INDEX).nonzero())
    answer = _ids(model, " A cat.</s>")
    assert labels[-len(answer):].tolist() == answer
    assert (labels[: -len(answer)] == IGNORE_INDEX).all()  # system, user turn, image, opening

    out = model(ids[None], labels=labels[None], images=[_image(4)])
    image_labels = torch.full((64,), IGNORE_INDEX)
    spliced = torch.cat([labels[:image_at], image_labels, labels[image_at + 1 :]])
    assert out.logits.shape == (1, len(ids) - 1 + 64, 260)
    expected = F.cross_entropy(out.logits[0, :-1], spliced[1:], ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, expected)


@torch.no_grad()
def test_several_images_in_one_prompt_and_text_only(model):
    images = [_image(5), _image(6)]
    ids = [1, *_ids(model, "a"), IMAGE_TOKEN_INDEX, *_ids(model, " and "), IMAGE_TOKEN_INDEX, 10]
    logits = model(torch.tensor([ids]), images=images).logits
    reference = _mgm.spliced_logits(model.llm.model, ids, model.encode_images(images))
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    swapped = model(torch.tensor([ids]), images=images[::-1]).logits
    assert not torch.allclose(swapped, logits)  # images enter in order of appearance

    text = torch.tensor([[1, *_ids(model, "plain text")]])
    torch.testing.assert_close(model(text).logits, model.llm.model(text).logits, rtol=0, atol=0)


@torch.no_grad()
def test_batched_left_padded_generation_equals_one_at_a_time(model):
    prompts = [
        [1, *_ids(model, "USER: "), IMAGE_TOKEN_INDEX, *_ids(model, "\nDescribe. ASSISTANT:")],
        [1, IMAGE_TOKEN_INDEX, *_ids(model, "Hi")],
    ]
    images = [_image(7), _image(8)]
    singles = [
        model.generate(torch.tensor([p]), images=[im], max_new_tokens=6, do_sample=False)[0]
        for p, im in zip(prompts, images)
    ]
    width = max(map(len, prompts))
    pad = model.llm.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batched = model.generate(ids, images=images, attention_mask=mask, max_new_tokens=6,
                             do_sample=False)  # fmt: skip
    for row, single in zip(batched, singles):
        assert row[: len(single)].tolist() == single.tolist()


def test_chat_returns_text(model):
    reply = model.chat(_image(9), [{"role": "user", "content": "What is in the picture?"}],
                       max_new_tokens=8)  # fmt: skip
    assert isinstance(reply, str)
    text_only = model.chat(None, [{"role": "user", "content": "Hello"}], max_new_tokens=4)
    assert isinstance(text_only, str)
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) but 1 image\(s\)"):
        model.chat([_image(9)], [{"role": "user", "content": "<image> <image> two?"}])


@pytest.mark.parametrize("template, bos", [("vicuna_v1", True), ("chatml", False)])
def test_chat_adds_bos_only_where_the_template_says(model, monkeypatch, template, bos):
    seen = []

    def generate(ids, images=None, **kwargs):
        seen.append(ids[0].tolist())
        return torch.tensor([_ids(model, " hi")])

    monkeypatch.setattr(model, "generate", generate)
    messages = [{"role": "user", "content": "Name it."}]
    assert model.chat(None, messages, template=template) == "hi"
    tok = model.llm.tokenizer
    text = vlmkit.data.conversation.get_template(template).render(messages)
    assert seen == [[tok.bos_token_id] * bos + _ids(model, text)]


@pytest.mark.parametrize("shard_size", ["2GB", 20_000])
def test_save_and_load_give_exact_logits(model, tmp_path, shard_size):
    model.save_pretrained(tmp_path / "saved", max_shard_size=shard_size)
    files = sorted(p.name for p in (tmp_path / "saved").glob("*.safetensors"))
    assert (len(files) > 1) == (shard_size != "2GB")
    loaded = vlmkit.VisionLanguageModel.from_pretrained(tmp_path / "saved")
    ids = torch.tensor([[1, *_ids(model, "look "), IMAGE_TOKEN_INDEX, *_ids(model, "here")]])
    with torch.no_grad():
        expected = model(ids, images=[_image(10)]).logits
        reloaded = loaded(ids, images=[_image(10)]).logits
        torch.testing.assert_close(reloaded, expected, rtol=0, atol=0)
    text = "é€ abc"
    assert loaded.llm.tokenizer(text)["input_ids"] == model.llm.tokenizer(text)["input_ids"]


def test_wrong_image_size_names_both_sizes(model):
    with pytest.raises(ValueError) as err:
        model.encode_images(torch.randn(1, 3, 100, 100))
    assert f"(B, 3, {HR}, {HR})" in str(err.value) and "(1, 3, 100, 100)" in str(err.value)


def test_placeholder_and_image_count_mismatch_names_both_counts(model):
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 40, IMAGE_TOKEN_INDEX]])
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) but 1 image\(s\)"):
        model(ids, images=[_image(11)])
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) but no images"):
        model(ids)


def test_unknown_preset_names_it_and_the_valid_ones():
    with pytest.raises(vlmkit.ConfigError) as err:
        vlmkit.build("mgm-7")
    message = str(err.value)
    assert "unknown preset 'mgm-7'" in message and "mgm-7b" in message and "mgm-tiny" in message
