"""Remember frozen vision towers' outputs across epochs: :func:`cache_frozen_towers`.

In MGM's stages the towers are frozen (:func:`vlmkit.train.stages.apply_stage`), so an image's
tower features never change during training, and running the towers again every epoch is wasted
work; with a small LLM on a CPU it is most of a training step. Inside
``with cache_frozen_towers(model):`` each frozen tower slot holds a :class:`CachedTower`, which runs
the tower once per distinct image and afterwards returns the stored features. Images are recognised
by their pixels (a hash of the tensor's bytes, shape and dtype), so datasets, collators and the
trainer work unchanged. The store is in memory (the fine-detail demo's HR map, 112 x 64 x 64
floats, is 1.8 MB per image) and is dropped when the block exits, which puts the towers back.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from vlmkit.config import ENCODER_SLOTS


def pixel_key(pixels: torch.Tensor) -> tuple[tuple[int, ...], str, bytes]:
    """A key for one image's pixels ``(3, S, S)``: shape, dtype and a 128-bit hash of the bytes."""
    raw = pixels.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    return tuple(pixels.shape), str(pixels.dtype), hashlib.blake2b(raw, digest_size=16).digest()


class CachedTower(nn.Module):
    """A frozen tower ``(B, 3, S, S) -> features (B, ...)`` that runs once per distinct image.

    The first call with an image runs the tower on all of the batch's new images together; later
    calls return the stored features. ``hits`` and ``misses`` count images. The tower must be
    frozen (``tower.frozen``): a trainable tower's features change every step.
    """

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        if not getattr(tower, "frozen", False):
            raise ValueError(f"only a frozen tower can be cached; {type(tower).__name__} is trainable")
        self.tower = tower
        self.store: dict[Any, torch.Tensor] = {}
        self.hits = self.misses = 0

    @property
    def info(self) -> Any:
        return self.tower.info

    @property
    def frozen(self) -> bool:
        return True

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` pixels -> the tower's features for each image, stacked ``(B, ...)``."""
        keys = [pixel_key(p) for p in pixels]
        first: dict[Any, int] = {}  # each new image's first index in the batch
        for i, key in enumerate(keys):
            if key not in self.store and key not in first:
                first[key] = i
        if first:
            with torch.no_grad():
                features = self.tower(pixels[list(first.values())])
            self.store.update(zip(first, features))
        self.misses += len(first)
        self.hits += len(keys) - len(first)
        return torch.stack([self.store[key] for key in keys])


@contextmanager
def cache_frozen_towers(model: nn.Module) -> Iterator[dict[str, CachedTower]]:
    """Inside the block, every frozen tower of ``model`` (``lr_encoder``, ``hr_encoder``) is a
    :class:`CachedTower`; yields ``{slot: CachedTower}``. The original towers are restored on exit,
    also after an exception. Trainable towers are left as they are."""
    originals = {slot: getattr(model, slot, None) for slot in ENCODER_SLOTS}
    cached = {slot: CachedTower(tower) for slot, tower in originals.items()
              if tower is not None and getattr(tower, "frozen", False)}  # fmt: skip
    for slot, wrapper in cached.items():
        setattr(model, slot, wrapper)
    try:
        yield cached
    finally:
        for slot in cached:
            setattr(model, slot, originals[slot])
