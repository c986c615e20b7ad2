"""MGM releases whose tokenizer is only ``tokenizer.model``: vlmkit's prompt ids equal the official
ones (MGM's prompt text, ``Image k:`` labels, ``tokenizer_image_token`` and transformers 4's slow
``LlamaTokenizer``, restated in ``tests/_mgm_text.py``) on generated conversations in every MGM
template, both ``legacy`` modes; such a release loads and chats."""

from __future__ import annotations

import json
import random
import zlib

import pytest
import torch

from tests import _mgm_text
from tests.compat.test_mgm import write_release
from vlmkit._prompt import MGM_IMAGE_LABEL, chat_prompt_ids, chat_prompt_text
from vlmkit.compat import mgm
from vlmkit.compat._mgm_rules import tokenizer_settings
from vlmkit.data.conversation import get_template
from vlmkit.llms._sentencepiece import LlamaSentencePieceTokenizer, load_llama_sentencepiece

PROMPTS_PER_TEMPLATE = 200
# The backbone's own special tokens, and whether its tokenizer adds BOS (Yi's does not).
BACKBONE_TOKENS = {
    "vicuna_v1": ((), True),
    "llava_llama_2": ((), True),
    "mistral_instruct": ((), True),
    "gemma": (("<start_of_turn>", "<end_of_turn>", "<eos>"), True),
    "llama_3": (("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), True),
    "chatml_direct": (("<|im_start|>", "<|im_end|>"), False),
}
SPACES = ("", " ", " ", "  ", "\n", "\n\n", "\t", " \n")


def _text(rng: random.Random, words: int) -> str:
    out = ""
    for _ in range(words):
        word = rng.choice(_mgm_text.OTHER) if rng.random() < 0.15 else rng.choice(_mgm_text.WORDS)
        out += rng.choice(SPACES[1:3] if rng.random() < 0.8 else SPACES) + word
    return out[1:] if rng.random() < 0.7 else out  # some texts start with a space or a newline


def _user_turn(rng: random.Random, images: int) -> str:
    """A user turn with ``images`` placeholders where users and MGM's CLI put them: ``<image>\\n``
    lines first, ``<image>`` then a space, ``<image>`` at the end, or between words."""
    text = _text(rng, rng.randint(1, 10))
    if images == 0:
        return text
    style = rng.choice(("cli", "space", "end", "middle", "glued"))
    if style == "cli":
        return "<image>\n" * images + text.lstrip()
    if style == "space":
        return "<image> " * images + text.lstrip()
    if style == "end":
        return text + rng.choice(("", " ", "\n")) + "<image>" * images
    if style == "glued":
        return "<image>" * images + text
    words = text.split(" ")
    for _ in range(images):
        words.insert(rng.randint(0, len(words)), "<image>")
    return " ".join(words)


def conversations(seed: int, count: int) -> list[list[str]]:
    """``count`` conversations (user, assistant, ..., user texts), 1-3 rounds, 0-3 images in the
    first user turn and sometimes one in a later turn."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        rounds = rng.randint(1, 3)
        turns = []
        for r in range(rounds):
            images = rng.choice((0, 1, 1, 2, 3)) if r == 0 else int(rng.random() < 0.15)
            turns.append(_user_turn(rng, images))
            if r < rounds - 1:
                turns.append(_text(rng, rng.randint(1, 8)).strip() or "yes")
        out.append(turns)
    return out


def _messages(turns: list[str]) -> list[dict[str, str]]:
    return [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentencepiece")
    dirs = {}
    for name, (added, bos) in BACKBONE_TOKENS.items():
        for legacy in (True, False):
            dirs[name, legacy] = _mgm_text.write_sentencepiece_tokenizer(
                root / f"{name}-{legacy}", legacy=legacy, add_bos_token=bos, added=added
            )
    return dirs


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
@pytest.mark.parametrize("name", list(BACKBONE_TOKENS))
def test_prompt_ids_equal_the_official_slow_tokenizer(tokenizer_dirs, name, legacy):
    directory = tokenizer_dirs[name, legacy]
    official = _mgm_text.SlowLlamaReference(directory)
    tokenizer = load_llama_sentencepiece(directory)
    template = get_template(name)
    leading_space = multi_image = 0
    seed = zlib.crc32(f"{name}-{legacy}".encode())
    for turns in conversations(seed=seed, count=PROMPTS_PER_TEMPLATE):
        prompt = _mgm_text.cli_image_labels(_mgm_text.official_prompt(name, turns))
        text = chat_prompt_text(_messages(turns), template, image_label=MGM_IMAGE_LABEL)
        assert text == prompt
        expected = _mgm_text.tokenizer_image_token(prompt, official)
        ids = chat_prompt_ids(_messages(turns), tokenizer, template, image_label=MGM_IMAGE_LABEL)
        assert ids == expected, (prompt, tokenizer.convert_ids_to_tokens([max(i, 0) for i in ids]))
        leading_space += any(c[:1] == " " for c in prompt.split("<image>")[1:])
        multi_image += prompt.count("<image>") >= 2
    # The generated set holds the cases that differ without the slow semantics.
    assert leading_space >= 40 and multi_image >= 40, (leading_space, multi_image)


def test_text_after_an_image_that_starts_with_a_space(tokenizer_dirs):
    """The case seen on real releases: ``[-200, '▁', '▁Describe', ...]``."""
    for legacy in (True, False):
        tokenizer = load_llama_sentencepiece(tokenizer_dirs["vicuna_v1", legacy])
        messages = [{"role": "user", "content": "<image> Describe the image."}]
        ids = chat_prompt_ids(messages, tokenizer, get_template("vicuna_v1"))
        after = ids[ids.index(-200) + 1 :]
        assert tokenizer.convert_ids_to_tokens(after[:2]) == ["▁", "▁Describe"]
        # "<image>" at the end of the turn leaves " ASSISTANT:" after it: the same extra "▁".
        messages = [{"role": "user", "content": "Describe the image. <image>"}]
        ids = chat_prompt_ids(messages, tokenizer, get_template("vicuna_v1"))
        after = tokenizer.convert_ids_to_tokens(ids[ids.index(-200) + 1 :])
        assert after == ["▁", "▁ASSISTANT", ":"]


def test_a_release_with_only_tokenizer_model_loads_and_chats(tmp_path):
    release, _, _ = write_release(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (release / name).unlink(missing_ok=True)
    # The tiny LLM has 260 ids: a vocabulary without byte fallback fits.
    _mgm_text.write_sentencepiece_tokenizer(
        release, legacy=None, vocab_size=260, byte_fallback=False
    )
    assert not (release / "tokenizer.json").exists()
    model = mgm.load(release)
    tokenizer = model.llm.tokenizer
    assert isinstance(tokenizer, LlamaSentencePieceTokenizer)
    assert model.config.llm.kwargs["tokenizer_backend"] == "llama-sentencepiece"
    assert tokenizer.legacy is True  # transformers 4's default when the config does not say
    assert (tokenizer.model_max_length, tokenizer.padding_side) == (300, "right")
    official = _mgm_text.SlowLlamaReference(release)
    messages = [{"role": "user", "content": "<image>\n<image> Describe these, please?"}]
    prompt = _mgm_text.cli_image_labels(
        _mgm_text.official_prompt("vicuna_v1", [messages[0]["content"]])
    )
    expected = _mgm_text.tokenizer_image_token(prompt, official)
    seen = {}
    generate = model.generate

    def spy(ids, **kwargs):
        seen["ids"] = ids[0].tolist()
        return generate(ids, **kwargs)

    model.generate = spy
    torch.manual_seed(0)
    reply = model.chat([torch.randn(3, 64, 64)] * 2, messages, max_new_tokens=4)
    assert isinstance(reply, str)
    assert seen["ids"] == expected
    # A saved copy reads the same tokenizer again.
    model.save_pretrained(tmp_path / "saved")
    again = type(model).from_pretrained(tmp_path / "saved")
    assert isinstance(again.llm.tokenizer, LlamaSentencePieceTokenizer)
    assert again.llm.tokenizer("<s> x").input_ids == tokenizer("<s> x").input_ids


LEGACY_JSON = {"normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
]}}  # fmt: skip
METASPACE_JSON = {"normalizer": None, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}}
SLOW = {"tokenizer_backend": "llama-sentencepiece"}
SLOW_LEGACY = {**SLOW, "tokenizer_kwargs": {"legacy": True}}
FAST = {"tokenizer_backend": "transformers"}


@pytest.mark.parametrize(
    "model, tokenizer_json, tokenizer_class, llm, expected",
    [
        (True, None, "LlamaTokenizer", "llama", SLOW),  # Vicuna, Yi: use_fast=False
        (True, METASPACE_JSON, "LlamaTokenizer", "llama", SLOW),
        (True, None, None, "mixtral", SLOW_LEGACY),  # converted by transformers 4.36: legacy
        (True, LEGACY_JSON, "LlamaTokenizerFast", "mixtral", SLOW_LEGACY),
        (True, METASPACE_JSON, "LlamaTokenizerFast", "mixtral", FAST),
        (True, None, "GemmaTokenizer", "gemma", FAST),
        (False, {}, "PreTrainedTokenizerFast", "llama", FAST),  # Llama-3
    ],
)
def test_which_releases_use_the_slow_semantics(
    tmp_path, model, tokenizer_json, tokenizer_class, llm, expected
):
    """As the official loader: use_fast=False for Llama-architecture releases; transformers 4.36's
    fast LLaMA tokenizer, which computes the slow legacy mode, for the others."""
    if model:
        (tmp_path / "tokenizer.model").write_bytes(b"")
    if tokenizer_json is not None:
        (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    if tokenizer_class is not None:
        config = json.dumps({"tokenizer_class": tokenizer_class})
        (tmp_path / "tokenizer_config.json").write_text(config)
    assert tokenizer_settings(tmp_path, llm) == expected
