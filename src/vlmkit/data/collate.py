"""Batching LLaVA samples: right padding of ids and labels, pixels of all images concatenated."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlmkit.data.conversation import IGNORE_INDEX


def merge_pixels(pixels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Processor outputs of several samples as one: ``lr`` and ``hr`` concatenated on dim 0.

    Each input: ``{"lr": (n*V, 3, s, s), "hr": (n, 3, S, S) or None, "num_views": V}``; the
    images keep their order, which is the order of the ``<image>`` placeholders in the batch.
    """
    views = {p["num_views"] for p in pixels}
    if len(views) != 1:
        raise ValueError(f"samples were processed with different numbers of views: {sorted(views)}")
    hrs = [p.get("hr") for p in pixels]
    if any(h is None for h in hrs) and not all(h is None for h in hrs):
        raise ValueError("some samples have HR pixels and some do not")
    return {
        "lr": torch.cat([p["lr"] for p in pixels]),
        "hr": None if hrs[0] is None else torch.cat(hrs),
        "num_views": views.pop(),
    }


class Collator:
    """``list`` of :class:`~vlmkit.data.llava.LlavaDataset` items → a batch for the model.

    Returns ``{"input_ids": (B, L), "attention_mask": (B, L), "labels": (B, L), "images":
    merged pixels or None}``, right-padded with ``pad_token_id`` and ``IGNORE_INDEX``. ``None``
    items (samples the dataset skipped) are dropped; a batch of only ``None`` gives ``None``.
    """

    def __init__(self, pad_token_id: int) -> None:
        if not isinstance(pad_token_id, int) or pad_token_id < 0:
            raise ValueError(f"pad_token_id must be a non-negative int, got {pad_token_id!r}")
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
        items = [item for item in items if item is not None]
        if not items:
            return None
        length = max(len(item["input_ids"]) for item in items)
        batch = len(items)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        for b, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[b, :n] = item["input_ids"]
            labels[b, :n] = item["labels"]
            attention_mask[b, :n] = 1
        pixels = [item["pixels"] for item in items if item.get("pixels") is not None]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "images": merge_pixels(pixels) if pixels else None,
        }
