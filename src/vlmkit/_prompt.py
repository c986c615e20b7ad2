"""A chat prompt's token ids: template text, image labels, then ids with image placeholders.

Mini-Gemini's CLI labels the images of a prompt that holds two or more: every ``<image>`` becomes
``Image 1:<image>``, ``Image 2:<image>``, ... in prompt order, after the template has been
rendered. :func:`label_images` does that for any label format with ``{index}``;
:func:`chat_prompt_ids` is the path :meth:`vlmkit.model.VisionLanguageModel.chat` takes.
"""

from __future__ import annotations

from typing import Any, Sequence

from vlmkit.config import check_image_label
from vlmkit.data.conversation import IMAGE_TOKEN, ChatTemplate, Message, tokenize_with_images

MGM_IMAGE_LABEL = "Image {index}:"  # what the official CLI writes


def label_images(text: str, label: str) -> str:
    """``text`` with ``label.format(index=k)`` before its k-th ``<image>`` (k from 1), when
    ``label`` is set and the text holds two or more images; else ``text`` unchanged."""
    if not check_image_label(label) or text.count(IMAGE_TOKEN) < 2:
        return text
    parts = text.split(IMAGE_TOKEN)
    labelled = [parts[0]]
    for index, part in enumerate(parts[1:], start=1):
        labelled.append(label.format(index=index) + IMAGE_TOKEN + part)
    return "".join(labelled)


def chat_prompt_text(
    messages: Sequence[Message], template: ChatTemplate, *, image_label: str = ""
) -> str:
    """The prompt text for a reply to ``messages``: rendered with the generation prompt, images
    labelled with ``image_label``."""
    return label_images(template.render(messages, add_generation_prompt=True), image_label)


def chat_prompt_ids(
    messages: Sequence[Message], tokenizer: Any, template: ChatTemplate, *, image_label: str = ""
) -> list[int]:
    """Token ids of :func:`chat_prompt_text`, each ``<image>`` as ``IMAGE_TOKEN_INDEX``."""
    text = chat_prompt_text(messages, template, image_label=image_label)
    return tokenize_with_images(text, tokenizer, add_bos=template.add_bos)
