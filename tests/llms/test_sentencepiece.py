"""``LlamaSentencePieceTokenizer``: transformers 4's slow ``LlamaTokenizer`` semantics on a
``tokenizer.model`` trained here, against the restatement in ``tests/_mgm_text.py``; the
``tokenizer_backend`` option of ``hf-causal-lm``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vlmkit
from tests import _mgm_text
from vlmkit.llms._sentencepiece import LlamaSentencePieceTokenizer, load_llama_sentencepiece

ADDED = ("<|im_start|>", "<|im_end|>")
FRAGMENTS = [
    *_mgm_text.WORDS[:20], *_mgm_text.OTHER, " ", "  ", "\n", "\t", "<s>", "</s>", "<unk>", *ADDED,
    "<image>", "▁x",
]  # fmt: skip
texts = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)


@pytest.fixture(scope="module")
def directories(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {
        legacy: _mgm_text.write_sentencepiece_tokenizer(
            root / str(legacy), legacy=legacy, added=ADDED
        )
        for legacy in (True, False, None)
    }


@pytest.mark.parametrize("legacy", [True, False, None])
def test_pieces_and_ids_equal_the_slow_tokenizer(directories, legacy):
    tokenizer = load_llama_sentencepiece(directories[legacy])
    reference = _mgm_text.SlowLlamaReference(directories[legacy])
    assert tokenizer.legacy is (True if legacy is None else legacy)

    @settings(max_examples=150, deadline=None)
    @given(texts)
    def check(text):
        assert tokenizer.tokenize(text) == reference.tokenize(text)
        assert tokenizer(text).input_ids == reference.ids(text)

    check()


def test_leading_space_and_decoding(directories):
    # Decoded as transformers 4.36.2's slow LlamaTokenizer decodes these ids (measured): in legacy
    # mode "user" after a special token was encoded as "▁user", hence the second space.
    decoded = {True: "Describe 猫 😀\n\tnaïve  user", False: "Describe 猫 😀\n\tnaïve user"}
    for legacy in (True, False):
        tokenizer = load_llama_sentencepiece(directories[legacy])
        assert tokenizer.tokenize(" Describe") == ["▁", "▁Describe"]
        assert tokenizer.tokenize("Describe") == ["▁Describe"]
        ids = tokenizer("Describe 猫 😀\n\tnaïve <|im_start|>user").input_ids
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == decoded[legacy]


def test_save_and_reload_keep_the_fields(directories, tmp_path):
    directory = _mgm_text.write_sentencepiece_tokenizer(
        tmp_path / "yi", legacy=False, add_bos_token=False, added=ADDED
    )
    tokenizer = load_llama_sentencepiece(directory)
    assert tokenizer("x").input_ids[0] != tokenizer.bos_token_id
    tokenizer.save_pretrained(tmp_path / "saved")
    again = load_llama_sentencepiece(tmp_path / "saved")
    assert (again.legacy, again.add_bos_token) == (False, False)
    text = "<|im_start|>user\n Describe</s>USER"
    assert again(text).input_ids == tokenizer(text).input_ids


def test_hf_causal_lm_tokenizer_backend(directories, tmp_path):
    config = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 520}  # fmt: skip
    llm = vlmkit.create("llm", "hf-causal-lm", config=config, tokenizer=str(directories[True]),
                        tokenizer_backend="llama-sentencepiece")  # fmt: skip
    assert isinstance(llm.tokenizer, LlamaSentencePieceTokenizer)
    assert llm.tokenizer.pad_token == "<unk>"
    legacy = vlmkit.create("llm", "hf-causal-lm", config=config, tokenizer=str(directories[False]),
                           tokenizer_backend="llama-sentencepiece",
                           tokenizer_kwargs={"legacy": True})  # fmt: skip
    assert legacy.tokenizer.legacy is True
    assert legacy.tokenizer.tokenize("</s>USER") == ["</s>", "▁USER"]  # legacy: a dummy prefix
    assert load_llama_sentencepiece(directories[False]).tokenize("</s>USER") == ["</s>", "US", "ER"]
    with pytest.raises(ValueError, match=r"tokenizer_kwargs must be a mapping( or None)?, got 'legacy'"):
        vlmkit.create("llm", "hf-causal-lm", config=config, tokenizer_kwargs="legacy")
    with pytest.raises(ValueError, match=r"tokenizer_backend must be one of .* got 'slow'"):
        vlmkit.create("llm", "hf-causal-lm", config=config, tokenizer_backend="slow")
    empty = vlmkit.create("llm", "hf-causal-lm", config=config, tokenizer=str(tmp_path),
                          tokenizer_backend="llama-sentencepiece")  # fmt: skip
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no tokenizer.model"):
        empty.tokenizer


@pytest.mark.parametrize("legacy", [True, False])
def test_training_examples_keep_the_inference_ids(directories, legacy):
    """transformers 5's Python tokenizers give no offsets: the chunk is still tokenized whole, and
    the answer's tokens (with its end of turn) are the supervised ones."""
    from vlmkit.data.conversation import IGNORE_INDEX, build_example, get_template
    from vlmkit.data.conversation import tokenize_with_images

    tokenizer = load_llama_sentencepiece(directories[legacy])
    messages = [
        {"role": "user", "content": "<image> Describe the image."},
        {"role": "assistant", "content": "A cat on a table."},
        {"role": "user", "content": "What color?"},
        {"role": "assistant", "content": "red"},
    ]
    answer = ["▁cat", "▁on", "▁a", "▁ta", "ble", "."]
    expected = {
        "vicuna_v1": ["▁A", *answer, "</s>", "▁red", "</s>"],
        "chatml_direct": ["A", *answer, "<|im_end|>", "red", "<|im_end|>"],
    }
    for name, pieces in expected.items():
        template = get_template(name)
        example = build_example(messages, tokenizer, template)
        text = template.render(messages, add_generation_prompt=False)
        ids = example["input_ids"].tolist()
        assert ids == tokenize_with_images(text, tokenizer, add_bos=template.add_bos)
        labels = [t for t in example["labels"].tolist() if t != IGNORE_INDEX]
        assert tokenizer.convert_ids_to_tokens(labels) == pieces
