"""Mini-Gemini's text side restated from its public code for equivalence tests, without vlmkit.

- :class:`SlowLlamaReference`: transformers 4.36's slow ``LlamaTokenizer`` (what MGM loads with
  ``use_fast=False``) on ``sentencepiece`` alone: the text is split on added/special tokens, each
  other piece is encoded by sentencepiece (``legacy=True``: with its dummy prefix; ``legacy=False``:
  one ``▁`` before the whole text, no dummy prefix, a piece starting with a space encoded behind
  ``<unk>`` which is cut off again), BOS/EOS by ``add_bos_token`` / ``add_eos_token``.
- :func:`tokenizer_image_token`: ``mgm.mm_utils.tokenizer_image_token``: every chunk between
  ``<image>`` tokenized on its own; the first chunk's BOS kept, the first id of every later chunk
  dropped when the first chunk started with BOS.
- :func:`official_prompt`: ``mgm.conversation.Conversation.get_prompt`` for the MGM templates;
  :func:`cli_image_labels`: ``mgm.serve.cli``'s ``Image k:`` labels.
- :func:`write_sentencepiece_tokenizer`: a tiny LLaMA-style sentencepiece model trained here
  (BPE, byte fallback, dummy prefix) with the ``tokenizer_config.json`` transformers 4 writes.
"""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

IMAGE_TOKEN_INDEX = -200
SPIECE_UNDERLINE = "▁"
SPECIAL = ("<unk>", "<s>", "</s>")

WORDS = (
    "a chat between curious user and an artificial intelligence assistant the gives helpful "
    "detailed polite answers to questions Describe describe this image what is in picture how "
    "many people are there please explain color red green blue cat dog sitting on table You "
    "language vision able understand visual content that provides assist with variety of tasks "
    "using natural Answer USER ASSISTANT INST SYS system model eos Image"
).split()
# Words the tiny vocabulary lacks (byte fallback), digits, punctuation and whitespace runs.
OTHER = (
    "zebra", "naïve", "猫", "😀", "2024", "3.5", "x", "—", "?", "!", ",", ".", ":", "'s",
    "▁",
)  # fmt: skip


def write_sentencepiece_tokenizer(
    directory: Path,
    *,
    legacy: bool | None = True,
    add_bos_token: bool = True,
    added: tuple[str, ...] = (),
    vocab_size: int = 500,
    byte_fallback: bool = True,
) -> Path:
    """``tokenizer.model`` (trained here, offline) and the ``tokenizer_config.json`` /
    ``special_tokens_map.json`` that transformers 4's ``LlamaTokenizer.save_pretrained`` writes;
    ``added`` become added special tokens after the sentencepiece vocabulary. ``legacy=None``
    leaves the field out (transformers 4 then uses legacy mode)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    lines = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + rng.choice(".?!,:")
        for _ in range(600)
    ]
    lines += ["USER: <image>\nDescribe the image. ASSISTANT: [INST] [/INST] <<SYS>> <</SYS>>"] * 20
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buffer, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=byte_fallback, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, num_threads=1, minloglevel=2,
    )  # fmt: skip
    (directory / "tokenizer.model").write_bytes(buffer.getvalue())

    def entry(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True}  # fmt: skip

    decoder = {str(i): entry(t) for i, t in enumerate(SPECIAL)}
    decoder.update({str(vocab_size + i): entry(t) for i, t in enumerate(added)})
    config = {
        "add_bos_token": add_bos_token, "add_eos_token": False, "added_tokens_decoder": decoder,
        "bos_token": "<s>", "clean_up_tokenization_spaces": False, "eos_token": "</s>",
        "model_max_length": 2048, "pad_token": "<unk>", "padding_side": "right",
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }  # fmt: skip
    if added:
        config["additional_special_tokens"] = list(added)
    if legacy is not None:
        config["legacy"] = legacy
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special_map = {
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"
    }  # fmt: skip
    if added:
        special_map["additional_special_tokens"] = list(added)
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))
    return directory


class SlowLlamaReference:
    """transformers 4.36's slow ``LlamaTokenizer`` read from a directory (see the module)."""

    def __init__(self, directory: Path) -> None:
        config = json.loads((Path(directory) / "tokenizer_config.json").read_text())
        self.legacy = config.get("legacy")
        self.legacy = True if self.legacy is None else self.legacy
        self.add_bos = config.get("add_bos_token", True)
        self.add_eos = config.get("add_eos_token", False)
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((Path(directory) / "tokenizer.model").read_bytes())
        if not self.legacy:
            proto.normalizer_spec.add_dummy_prefix = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.added = {t["content"]: int(i) for i, t in config["added_tokens_decoder"].items()}
        self.special = set(self.added)  # every added token here is special
        self.bos_id, self.eos_id = self.added["<s>"], self.added["</s>"]
        names = sorted(self.added, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")")
        self._unk_length = len(self.sp.encode("<unk>", out_type=str))

    def tokenize(self, text: str) -> list[str]:
        if not self.legacy and text:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        pieces: list[str] = []
        for part in self._split.split(text):
            if part in self.added:
                pieces.append(part)
            elif part:
                pieces.extend(self._encode(part))
        if not self.legacy and len(pieces) > 1 and pieces[0] == SPIECE_UNDERLINE:
            if pieces[1] in self.special:
                pieces = pieces[1:]
        return pieces

    def _encode(self, text: str) -> list[str]:
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp.encode(text, out_type=str)
        return self.sp.encode("<unk>" + text, out_type=str)[self._unk_length :]

    def ids(self, text: str) -> list[int]:
        """``tokenizer(text).input_ids``: BOS / EOS as configured."""
        pieces = self.tokenize(text)
        body = [self.added[p] if p in self.added else self.sp.piece_to_id(p) for p in pieces]
        return [self.bos_id] * self.add_bos + body + [self.eos_id] * self.add_eos


def tokenizer_image_token(prompt: str, tokenizer: SlowLlamaReference) -> list[int]:
    """``mgm.mm_utils.tokenizer_image_token`` restated."""
    chunks = [tokenizer.ids(chunk) for chunk in prompt.split("<image>")]
    offset = int(bool(chunks[0]) and chunks[0][0] == tokenizer.bos_id)
    ids = chunks[0][:1] if offset else []
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


_LLAVA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_VISION_SYSTEM = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)
# name -> (separator style, system, roles, sep, sep2), as in mgm/conversation.py.
OFFICIAL_TEMPLATES = {
    "vicuna_v1": ("two", _LLAVA_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>"),
    "llava_llama_2": ("llama_2", _VISION_SYSTEM, ("USER", "ASSISTANT"), "<s>", "</s>"),
    "mistral_instruct": ("llama_2", "", ("USER", "ASSISTANT"), "<s>", "</s>"),
    "gemma": ("gemma", "", ("user", "model"), "", "<eos>"),
    "llama_3": (
        "mpt", "<|start_header_id|>system<|end_header_id|>\n\n" + _VISION_SYSTEM,
        ("<|start_header_id|>user<|end_header_id|>\n\n",
         "<|start_header_id|>system<|end_header_id|>\n\n"),
        "<|eot_id|>", None,
    ),
    "chatml_direct": (
        "mpt", "<|im_start|>system\nAnswer the questions.",
        ("<|im_start|>user\n", "<|im_start|>assistant\n"), "<|im_end|>", None,
    ),
}  # fmt: skip


def official_prompt(name: str, turns: list[str]) -> str:
    """``get_prompt()`` after appending ``turns`` (user, assistant, ..., user) and the empty
    assistant message, as MGM's CLI does."""
    style, system, roles, sep, sep2 = OFFICIAL_TEMPLATES[name]
    messages = [(roles[i % 2], text) for i, text in enumerate(turns)] + [(roles[1], None)]
    if style == "two":
        out = system + sep
        for i, (role, text) in enumerate(messages):
            out += f"{role}: {text}{(sep, sep2)[i % 2]}" if text else f"{role}:"
        return out
    if style == "mpt":
        out = system + sep
        for role, text in messages:
            out += role + text + sep if text else role
        return out
    if style == "gemma":
        out = system + sep
        for i, (role, text) in enumerate(messages):
            if text:
                out += f"<start_of_turn>{role}\n{text}<end_of_turn>\n{(sep, sep2)[i % 2]}"
            else:
                out += f"<start_of_turn>{role}\n"
        return out
    out = ""  # llama_2
    for i, (_, text) in enumerate(messages):
        if not text:
            continue
        if i == 0 and system:
            text = f"<<SYS>>\n{system}\n<</SYS>>\n\n" + text
        out += sep + f"[INST] {text} [/INST]" if i % 2 == 0 else f" {text} {sep2}"
    return out.lstrip(sep)


def cli_image_labels(prompt: str) -> str:
    """``mgm.serve.cli``: with two or more ``<image>``, each becomes ``Image k:<image>``."""
    if prompt.count("<image>") < 2:
        return prompt
    parts = prompt.split("<image>")
    return "".join(part + f"Image {k + 1}:<image>" for k, part in enumerate(parts[:-1])) + parts[-1]
