"""Mini-Gemini's generation protocol on a built model, and saving what a bridge returns.

MGM asks for an image by appending ``<GEN>`` to the user turn; the model answers with the image
prompt between ``<h>`` and ``</h>`` (the last pair counts) and a text-to-image model renders it.
A reply without a prompt is a normal outcome (the model declined, or is untrained): it gives an
:class:`ImageRequest` with ``prompt=None`` and no images, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vlmkit.data.conversation import append_generation_request, extract_image_prompt

NO_IMAGE_PROMPT = "no image prompt: the model's answer has no <h>...</h> pair"


@dataclass(frozen=True)
class ImageRequest:
    """The outcome of one generation request.

    ``reply``: the model's whole answer; ``prompt``: the text of its last ``<h>...</h>`` pair, or
    None; ``outputs``: what the bridge returned (PIL images, or strings for ``prompt-only``),
    empty without a prompt.
    """

    reply: str
    prompt: str | None
    outputs: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.prompt is not None

    @property
    def message(self) -> str:
        """One line for a user: the prompt, or why there is no image."""
        return f"image prompt: {self.prompt}" if self.ok else NO_IMAGE_PROMPT


def request_image(
    model: Any,
    images: Any,
    messages: Sequence[dict[str, str]],
    *,
    bridge: Any = None,
    negative_prompt: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    size: int | None = None,
    **chat_kwargs: Any,
) -> ImageRequest:
    """Ask ``model`` for an image about ``messages`` (and ``images``) and render its prompt.

    ``bridge`` defaults to the model's ``bridge`` slot; with neither, ValueError. ``chat_kwargs``
    go to :meth:`~vlmkit.model.VisionLanguageModel.chat` (``max_new_tokens``, ``streamer``...).
    """
    bridge = bridge if bridge is not None else getattr(model, "bridge", None)
    if bridge is None:
        raise ValueError(
            "request_image needs a bridge: pass bridge=vlmkit.create('bridge', name) or give the "
            f"model a 'bridge' slot (available: {_bridge_names()})"
        )
    reply = model.chat(images, append_generation_request(messages), **chat_kwargs)
    prompt = extract_image_prompt(reply)
    if prompt is None:
        return ImageRequest(reply=reply, prompt=None)
    outputs = bridge(prompt, negative_prompt=negative_prompt, seed=seed, steps=steps, size=size)
    return ImageRequest(reply=reply, prompt=prompt, outputs=list(outputs))


def save_outputs(outputs: Sequence[Any], stem: str | Path) -> list[Path]:
    """Write each output next to ``stem``: PIL images as ``<stem>.png`` (``<stem>-1.png``, ...),
    strings as ``.txt``. Returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, output in enumerate(outputs):
        name = stem.name if i == 0 else f"{stem.name}-{i}"
        if isinstance(output, str):
            path = stem.with_name(name + ".txt")
            path.write_text(output + "\n")
        elif hasattr(output, "save"):
            path = stem.with_name(name + ".png")
            output.save(path)
        else:
            raise TypeError(f"cannot save a bridge output of type {type(output).__name__}")
        paths.append(path)
    return paths


def _bridge_names() -> list[str]:
    from vlmkit.components import available

    return list(available("bridge"))
