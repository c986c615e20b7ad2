"""LLaMA's sentencepiece tokenizer with the semantics of transformers 4's slow ``LlamaTokenizer``.

Mini-Gemini loads its Vicuna and Yi tokenizers with ``use_fast=False`` (transformers 4.36); each
text is split on the added and special tokens, and every other piece goes to sentencepiece on its
own. transformers 5 reads ``tokenizer.model`` into a fast tokenizer instead, which writes one
``▁`` where the slow one writes two for a text that starts with a space (``" Describe"``:
``['▁', '▁Describe']`` slow, ``['▁Describe']`` fast). :class:`LlamaSentencePieceTokenizer`
keeps the slow semantics, both ``legacy`` modes:

- ``legacy=True`` (transformers 4's default when ``tokenizer_config.json`` does not say): every
  piece between special tokens is encoded with sentencepiece's own dummy prefix;
- ``legacy=False``: the text gets one ``▁`` in front, the dummy prefix is off, and a piece that
  starts with a space is encoded behind the unknown token, which is then cut off.

``add_bos_token`` / ``add_eos_token`` (default True / False) decide the special tokens around an
encoded text, as in transformers 4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

SPIECE_UNDERLINE = "▁"
VOCAB_FILE = "tokenizer.model"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"


class LlamaSentencePieceTokenizer(SentencePieceBackend):
    """transformers 4's slow ``LlamaTokenizer`` on a ``tokenizer.model`` (see the module)."""

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        unk_token: Any = "<unk>",
        bos_token: Any = "<s>",
        eos_token: Any = "</s>",
        pad_token: Any = None,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        legacy: bool | None = None,
        clean_up_tokenization_spaces: bool = False,
        **kwargs: Any,
    ) -> None:
        self.add_bos_token = bool(add_bos_token)
        self.add_eos_token = bool(add_eos_token)
        kwargs.pop("special_tokens_pattern", None)
        pattern = {(True, True): "bos_eos", (True, False): "bos", (False, True): "eos"}
        super().__init__(
            vocab_file=vocab_file,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            add_bos_token=self.add_bos_token,
            add_eos_token=self.add_eos_token,
            legacy=True if legacy is None else bool(legacy),  # transformers 4's default
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            special_tokens_pattern=pattern.get((self.add_bos_token, self.add_eos_token), "none"),
            **kwargs,
        )

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """transformers 5 leaves ``add_bos_token`` / ``add_eos_token`` out of the saved
        ``tokenizer_config.json``; they are written back, so a reload encodes the same ids."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        config_file = Path(save_directory) / CONFIG_FILE
        config = json.loads(config_file.read_text())
        config.update(add_bos_token=self.add_bos_token, add_eos_token=self.add_eos_token)
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return files

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Pieces of ``text``; without ``legacy`` the text gets one ``▁`` in front, dropped again
        when a special token follows it directly."""
        if self.legacy or not text:
            return super().tokenize(text, **kwargs)
        tokens = super().tokenize(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "), **kwargs)
        special = self.all_special_tokens
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in special:
            tokens = tokens[1:]
        return tokens

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Text of ``tokens``: sentencepiece decodes the runs between special tokens (bytes
        included); the first token's leading ``▁`` is the prefix the encoder added."""
        if not tokens:
            return ""
        tokens = list(tokens)
        if tokens[0].startswith(SPIECE_UNDERLINE):
            tokens[0] = tokens[0][1:]
        special = set(self.all_special_tokens)
        out, run, previous_special = "", [], False
        for i, token in enumerate(tokens):
            if token in special:
                if not previous_special and i and self.legacy:
                    out += " "
                out += self.sp_model.decode(run) + token
                run, previous_special = [], True
            else:
                run.append(token)
                previous_special = False
        return out + self.sp_model.decode(run)


def load_llama_sentencepiece(directory: str | Path, **kwargs: Any) -> LlamaSentencePieceTokenizer:
    """The tokenizer in ``directory`` (``tokenizer.model`` plus the optional
    ``tokenizer_config.json`` / ``special_tokens_map.json`` that transformers writes); ``kwargs``
    replace fields of the config (e.g. ``legacy=True``).

    Raises FileNotFoundError naming the directory when it has no ``tokenizer.model``.
    """
    directory = Path(directory)
    if not (directory / VOCAB_FILE).is_file():
        raise FileNotFoundError(
            f"{directory}: no {VOCAB_FILE} (the sentencepiece model that tokenizer_backend="
            "'llama-sentencepiece' reads)"
        )
    return LlamaSentencePieceTokenizer.from_pretrained(str(directory), **kwargs)


def has_only_sentencepiece(directory: str | Path) -> bool:
    """True when ``directory`` holds ``tokenizer.model`` and no ``tokenizer.json``."""
    directory = Path(directory)
    return (directory / VOCAB_FILE).is_file() and not (directory / "tokenizer.json").is_file()


def tokenizer_class(directory: str | Path) -> str | None:
    """The ``tokenizer_class`` that ``tokenizer_config.json`` in ``directory`` names, if any."""
    file = Path(directory) / CONFIG_FILE
    if not file.is_file():
        return None
    try:
        value = json.loads(file.read_text()).get("tokenizer_class")
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None
