"""``hf-causal-lm``: tiny Llama and Gemma from configs, loading from a directory, the tokenizer,
``pkg://`` paths, standalone rebuilds and the errors that name bad values."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmkit._context import no_pretrained
from vlmkit.llms._tokenizers import byte_level_tokenizer
from vlmkit.llms.hf import HFCausalLM, resolve_path

LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 260}  # fmt: skip
GEMMA = {"model_type": "gemma", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 300,
         "hidden_activation": "gelu_pytorch_tanh"}  # fmt: skip


@pytest.mark.parametrize("config", [LLAMA, GEMMA], ids=["llama", "gemma"])
def test_tiny_configs_describe_what_they_build(config):
    info = HFCausalLM.describe(config=config)
    llm = HFCausalLM(config=config, tokenizer="byte-level").eval()
    assert (info.hidden_size, info.vocab_size) == (config["hidden_size"], config["vocab_size"])
    assert llm.config.model_type == config["model_type"]
    ids = torch.tensor([[5, 6, 7]])
    assert llm.embed(ids).shape == (1, 3, config["hidden_size"])
    with torch.no_grad():
        assert llm(input_ids=ids).logits.shape == (1, 3, config["vocab_size"])
    rebuilt = HFCausalLM(**llm.standalone_kwargs(), tokenizer="byte-level").eval()
    rebuilt.load_state_dict(llm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(input_ids=ids).logits, llm(input_ids=ids).logits)


def test_loads_weights_and_tokenizer_from_a_directory(tmp_path):
    source = HFCausalLM(config=LLAMA, tokenizer="byte-level").eval()
    source.model.save_pretrained(tmp_path)
    source.save_tokenizer(tmp_path)
    loaded = HFCausalLM(pretrained=str(tmp_path)).eval()
    assert not loaded.loading_info["missing_keys"] and not loaded.loading_info["unexpected_keys"]
    ids = torch.tensor([[1, 40, 50]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, source(input_ids=ids).logits,
                                   rtol=0, atol=0)  # fmt: skip
    assert loaded.tokenizer("abc")["input_ids"] == source.tokenizer("abc")["input_ids"]
    with no_pretrained():
        random = HFCausalLM(pretrained=str(tmp_path))
    assert random.loading_info is None
    assert not torch.equal(random.embed(ids), loaded.embed(ids))


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=40))
def test_byte_level_tokenizer_round_trips_any_text(text):
    tok = byte_level_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_package_paths_resolve_to_the_installed_package():
    import json
    from pathlib import Path

    assert resolve_path("pkg://json") == str(Path(json.__file__).parent)
    assert resolve_path("pkg://json/sub") == str(Path(json.__file__).parent / "sub")
    assert resolve_path("org/model") == "org/model"
    with pytest.raises(ValueError, match="no installed package named 'not_a_package_xyz'"):
        resolve_path("pkg://not_a_package_xyz")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"config": LLAMA, "dtype": "fp8"}, "dtype must be one of .* got 'fp8'"),
        ({"config": {"hidden_size": 8}}, "needs a 'model_type'"),
        ({}, "needs `pretrained`"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HFCausalLM(**kwargs)


def test_missing_tokenizer_is_explained():
    with pytest.raises(ValueError, match="no tokenizer"):
        HFCausalLM(config=LLAMA).tokenizer
