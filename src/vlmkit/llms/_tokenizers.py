"""Tokenizers built locally, with no files: a byte-level BPE over the 256 byte symbols.

Used by tiny models (``mgm-tiny``) so that chat, training and saving work offline; every string
round-trips exactly, at one token per byte.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = ("<unk>", "<s>", "</s>", "<pad>")


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` with ids 0-3 for ``<unk> <s> </s> <pad>`` and 256 byte ids."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.add_special_tokens({"additional_special_tokens": []})
    return fast
