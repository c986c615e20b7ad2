"""Chat templates as data, and the step from a conversation to token ids and labels.

A :class:`ChatTemplate` holds the text around each turn for one of Mini-Gemini's conversation
formats (``vicuna_v1``, ``gemma``, ``mistral_instruct``, ``llava_llama_2``, ``chatml_direct``,
``llama_3``, ``plain``) and for other backbones (``chatml``, ``smollm2``); one generic renderer
writes them all, so the text is checkable field by field. The rendered text keeps ``<image>``
placeholders: :func:`tokenize_with_images` turns each into the id ``IMAGE_TOKEN_INDEX`` (-200),
which the model later replaces by the image's visual tokens.
:func:`build_example` gives training ids and labels, supervising only the assistant's answers.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import torch

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100
GEN_TAG = "<GEN>"
_IMAGE_PROMPT = re.compile(r"<h>((?:(?!<h>|</h>).)*)</h>", re.DOTALL)

Message = Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """The text of one conversation format.

    A conversation renders as ``[system block] + rounds``. A round is
    ``user_format`` (never supervised), then ``assistant_prefix`` (never supervised; it is also the
    generation prompt), then ``answer_format`` (supervised: the answer and its end of turn).
    ``round_sep`` is written before every user turn but the first. A non-empty system text is
    written with ``system_format``, either first or at the start of the first user turn's
    content (``system_in_first_user``). With ``user_images_only`` a user turn keeps only
    its ``<image>`` tags (the pretraining format: the caption follows the image; a turn without
    an image keeps its text).
    """

    name: str
    system: str = ""
    system_format: str = "{system}"
    system_in_first_user: bool = False
    user_format: str = "{content}"
    assistant_prefix: str = ""
    answer_format: str = "{content}"
    round_sep: str = ""
    stop_str: str = ""
    add_bos: bool = True
    user_images_only: bool = False

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (``[{"role": ..., "content": str}]``).

        With ``add_generation_prompt`` the conversation must end with a user turn, and the text
        ends with the assistant's opening, ready for the reply.
        """
        text = "".join(piece for piece, _ in self.segments(messages))
        if add_generation_prompt:
            if _turns(messages)[1][-1]["role"] != "user":
                raise ValueError("add_generation_prompt needs the last message to be a user turn")
            text += self.assistant_prefix
        return text

    def segments(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        """The rendered conversation cut into ``(text, supervised)`` pieces.

        ``supervised`` is True for the assistant's answers with their end-of-turn text.
        ``"".join(text for text, _ in segments) == render(messages, add_generation_prompt=False)``.
        """
        system, turns = _turns(messages)
        system = self.system if system is None else system
        system_block = self.system_format.format(system=system) if system else ""
        pieces: list[tuple[str, bool]] = []
        if not self.system_in_first_user:
            pieces.append((system_block, False))
        for i, turn in enumerate(turns):
            if turn["role"] == "user":
                content = turn["content"]
                if self.user_images_only and IMAGE_TOKEN in content:
                    content = IMAGE_TOKEN * content.count(IMAGE_TOKEN)
                if i == 0 and self.system_in_first_user:
                    content = system_block + content
                sep = self.round_sep if i > 0 else ""
                pieces.append((sep + self.user_format.format(content=content), False))
            else:
                pieces.append((self.assistant_prefix, False))
                pieces.append((self.answer_format.format(content=turn["content"]), True))
        return _merge(pieces)


def check_messages(messages: Any) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first problem when ``messages`` is not a list
    of ``{"role", "content": str}`` dicts in the order a chat template renders."""
    _turns(messages)


def _turns(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    """Split off a leading system message; check roles alternate user, assistant, user, ..."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise ValueError(f"message {i} must be a dict with a str 'content', got {message!r}")
    system = None
    turns = list(messages)
    if turns and turns[0].get("role") == "system":
        system, turns = turns[0]["content"], turns[1:]
    if not turns:
        raise ValueError("the conversation has no user message")
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.get("role") != expected:
            position = i + (system is not None)
            raise ValueError(
                f"message {position} has role {turn.get('role')!r}, expected {expected!r} "
                "(an optional leading 'system', then 'user' and 'assistant' alternating)"
            )
    return system, turns


def _merge(pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Drop empty pieces and join neighbours with the same flag."""
    merged: list[tuple[str, bool]] = []
    for text, supervised in pieces:
        if not text:
            continue
        if merged and merged[-1][1] == supervised:
            merged[-1] = (merged[-1][0] + text, supervised)
        else:
            merged.append((text, supervised))
    return merged


_LLAVA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_VISION_ASSISTANT_SYSTEM = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)

# ChatML as SmolLM2, Qwen2 and others write it (a newline after every turn); no BOS, as their
# tokenizers' own chat templates add none.
_CHATML = ChatTemplate(
    name="chatml",
    system_format="<|im_start|>system\n{system}<|im_end|>\n",
    user_format="<|im_start|>user\n{content}<|im_end|>\n",
    assistant_prefix="<|im_start|>assistant\n",
    answer_format="{content}<|im_end|>\n",
    stop_str="<|im_end|>",
    add_bos=False,
)

_MISTRAL_INSTRUCT = ChatTemplate(
    name="mistral_instruct",
    system_format="<<SYS>>\n{system}\n<</SYS>>\n\n",
    system_in_first_user=True,
    user_format="[INST] {content} [/INST]",
    answer_format=" {content} </s>",
    round_sep="<s>",
    stop_str="</s>",
)

CHAT_TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate(
            name="vicuna_v1",
            system=_LLAVA_SYSTEM,
            system_format="{system} ",
            user_format="USER: {content} ",
            assistant_prefix="ASSISTANT:",
            answer_format=" {content}</s>",
            stop_str="</s>",
        ),
        ChatTemplate(
            name="gemma",
            system_format="{system}\n\n",
            system_in_first_user=True,
            user_format="<start_of_turn>user\n{content}<end_of_turn>\n",
            assistant_prefix="<start_of_turn>model\n",
            answer_format="{content}<end_of_turn>\n<eos>",
            stop_str="<end_of_turn>",
        ),
        _MISTRAL_INSTRUCT,
        # LLaVA's Llama-2 format, which MGM keeps: mistral_instruct with a default system text.
        dataclasses.replace(_MISTRAL_INSTRUCT, name="llava_llama_2", system=_VISION_ASSISTANT_SYSTEM),
        ChatTemplate(
            name="chatml_direct",
            system="Answer the questions.",
            system_format="<|im_start|>system\n{system}<|im_end|>",
            user_format="<|im_start|>user\n{content}<|im_end|>",
            assistant_prefix="<|im_start|>assistant\n",
            answer_format="{content}<|im_end|>",
            stop_str="<|im_end|>",
            add_bos=False,  # Yi's tokenizer adds no BOS; MGM's chatml masking assumes none
        ),
        ChatTemplate(
            name="llama_3",
            system=_VISION_ASSISTANT_SYSTEM,
            system_format="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
            user_format="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
            # MGM opens the assistant's turn with the *system* header; its Llama-3 checkpoints
            # were trained (and are prompted) that way, so it is kept.
            assistant_prefix="<|start_header_id|>system<|end_header_id|>\n\n",
            answer_format="{content}<|eot_id|>",
            stop_str="<|eot_id|>",
        ),
        _CHATML,
        # SmolLM2-Instruct's template: ChatML with its default system prompt.
        dataclasses.replace(
            _CHATML,
            name="smollm2",
            system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        ),
        ChatTemplate(
            name="plain",
            user_images_only=True,
            answer_format="{content}\n",
            stop_str="\n",
        ),
    )
}


# Where each template added by a plugin came from (vlmkit's own are not listed).
_PLUGIN_TEMPLATES: dict[str, Any] = {}


def register_template(template: ChatTemplate, *, origin: Any = None) -> None:
    """Add ``template`` under its name (plugins do it through ``vlmkit_register_templates``); a
    taken name raises ValueError."""
    if not isinstance(template, ChatTemplate):
        raise TypeError(f"expected a ChatTemplate, got {type(template).__name__}")
    if template.name in CHAT_TEMPLATES:
        raise ValueError(f"chat template {template.name!r} is already registered")
    CHAT_TEMPLATES[template.name] = template
    _PLUGIN_TEMPLATES[template.name] = origin


def remove_templates(origin: Any) -> None:
    """Forget the templates a plugin (``origin``) added."""
    for name in [n for n, o in _PLUGIN_TEMPLATES.items() if o == origin]:
        del CHAT_TEMPLATES[name], _PLUGIN_TEMPLATES[name]


def get_template(name: str) -> ChatTemplate:
    """The template called ``name`` (vlmkit's or a loaded plugin's); an unknown name raises
    ValueError listing the valid ones."""
    try:
        return CHAT_TEMPLATES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown chat template {name!r}; valid names: {', '.join(sorted(CHAT_TEMPLATES))}"
        ) from None


def tokenize_with_images(
    text: str,
    tokenizer: Any,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    add_bos: bool = True,
) -> list[int]:
    """Token ids of ``text`` with each ``<image>`` as ``image_token_index``.

    The chunks between placeholders are tokenized without special tokens; with ``add_bos`` and a
    tokenizer that has a BOS token, it is put once at the start. Pass ``template.add_bos``.
    """
    ids = _bos(tokenizer, add_bos)
    for i, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            ids.append(image_token_index)
        if chunk:
            ids.extend(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return ids


def build_example(
    messages: Sequence[Message],
    tokenizer: Any,
    template: ChatTemplate | str,
    *,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Training ids and labels for one conversation: ``{"input_ids": (L,), "labels": (L,)}``.

    ``input_ids`` equal ``tokenize_with_images(render(messages, False), add_bos=template.add_bos)``.
    ``labels`` equal ``input_ids`` on tokens that overlap an assistant answer (with its end of
    turn) and are ``IGNORE_INDEX`` elsewhere: BOS, system, user turns, assistant openings and
    image placeholders. Sequences longer than ``max_length`` are cut at the end, unless that
    would drop an image placeholder, which raises ValueError.
    """
    if isinstance(template, str):
        template = get_template(template)
    segments = template.segments(messages)
    ids = _bos(tokenizer, template.add_bos)
    labels = [IGNORE_INDEX] * len(ids)
    for text, supervised in _split_on_images(segments):
        if text is None:
            ids.append(IMAGE_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
            continue
        chunk_ids, chunk_supervised = _tokenize_chunk(text, supervised, tokenizer)
        ids.extend(chunk_ids)
        labels.extend(t if s else IGNORE_INDEX for t, s in zip(chunk_ids, chunk_supervised))
    if max_length is not None and len(ids) > max_length:
        if IMAGE_TOKEN_INDEX in ids[max_length:]:
            cut = ids.index(IMAGE_TOKEN_INDEX, max_length)
            raise ValueError(
                f"the example has {len(ids)} tokens; truncating to max_length={max_length} would "
                f"drop the image placeholder at position {cut}"
            )
        ids, labels = ids[:max_length], labels[:max_length]
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def _bos(tokenizer: Any, add_bos: bool) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [bos] if add_bos and bos is not None else []


def _split_on_images(
    segments: list[tuple[str, bool]],
) -> list[tuple[str | None, list[bool]]]:
    """Text chunks between placeholders with a per-character supervised mask; None = placeholder."""
    chunks: list[tuple[str | None, list[bool]]] = []
    text, mask = "", []
    for piece, supervised in segments:
        parts = piece.split(IMAGE_TOKEN)
        for i, part in enumerate(parts):
            if i:
                chunks.append((text, mask))
                chunks.append((None, []))
                text, mask = "", []
            text += part
            mask += [supervised] * len(part)
    chunks.append((text, mask))
    return [(t, m) for t, m in chunks if t is None or t]


def _tokenize_chunk(text: str, mask: list[bool], tokenizer: Any) -> tuple[list[int], list[bool]]:
    """Ids of one chunk and, per token, whether any of its characters is supervised."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # a tokenizer without offsets
        return _tokenize_by_piece(text, mask, tokenizer)
    if "offset_mapping" not in encoded:  # transformers 5's Python tokenizers leave them out
        return _tokenize_by_piece(text, mask, tokenizer)
    ids = list(encoded["input_ids"])
    flags = []
    for start, end in encoded["offset_mapping"]:
        if end > start:
            flags.append(any(mask[start:end]))
        else:  # a zero-width token belongs with the character after it
            flags.append(mask[min(start, len(mask) - 1)])
    return ids, flags


def _tokenize_by_piece(
    text: str, mask: list[bool], tokenizer: Any
) -> tuple[list[int], list[bool]]:
    """:func:`_tokenize_chunk` for a tokenizer without offsets: the chunk is tokenized whole (the
    ids inference gives); where ``mask`` changes, the ids of the text before the change show which
    tokens lie before it, and a token that straddles the change counts for both sides."""

    def encode(part: str) -> list[int]:
        return list(tokenizer(part, add_special_tokens=False)["input_ids"])

    ids = encode(text)
    flags = [False] * len(ids)
    changes = [i for i in range(1, len(text)) if mask[i] != mask[i - 1]]
    first = 0  # the first token of the current stretch of equal mask
    for start, end in zip([0, *changes], [*changes, len(text)]):
        last = next_first = len(ids)
        if end < len(text):
            before = encode(text[:end])
            same = next((k for k, (a, b) in enumerate(zip(before, ids)) if a != b), len(before))
            if same == len(before):  # the tokens stop at the change
                last = next_first = same
            else:  # ids[same] straddles the change
                last, next_first = same + 1, same
        for k in range(first, min(last, len(ids))):
            flags[k] = flags[k] or mask[start]
        first = next_first
    return ids, flags


def append_generation_request(messages: Sequence[Message]) -> list[dict[str, str]]:
    """A copy of ``messages`` asking for an image: ``" <GEN>"`` appended to the last user turn.

    This is MGM's protocol: the model then answers with the image prompt between ``<h>`` and
    ``</h>`` (see :func:`extract_image_prompt`). A turn already ending with the tag is left as is.
    """
    out = [dict(m) for m in messages]
    for message in reversed(out):
        if message.get("role") == "user":
            if not message["content"].rstrip().endswith(GEN_TAG):
                message["content"] = message["content"] + " " + GEN_TAG
            return out
    raise ValueError("append_generation_request needs at least one user message")


def extract_image_prompt(text: str) -> str | None:
    """The stripped text of the last ``<h>`` ... ``</h>`` pair; None without one.

    Pairs are innermost (``"<h>a <h>b</h>"`` gives ``"b"``, as MGM's split does); an empty
    prompt (``"<h> </h>"``) also gives None.
    """
    pairs = _IMAGE_PROMPT.findall(text)
    if not pairs:
        return None
    return pairs[-1].strip() or None
