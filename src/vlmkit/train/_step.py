"""Pieces of one optimiser step: the model-plus-loss module that DDP/FSDP wrap, AdamW parameter
groups, the supervised-token count the loss is normalised by, and bf16 autocast around the miner."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from vlmkit.data.conversation import IGNORE_INDEX


class TrainStep(nn.Module):
    """The model and its loss as one module, so DDP/FSDP wrap (and synchronise) all of it.

    Under several processes a batch without images still runs the vision side on a blank image
    with weight zero, so every process produces gradients for the same parameters.
    """

    def __init__(self, model: nn.Module, keep_vision_in_graph: bool) -> None:
        super().__init__()
        self.model = model
        self.keep_vision_in_graph = keep_vision_in_graph

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                images: Any, num_items: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                         images=images, num_items_in_batch=num_items)
        loss = out.loss
        if images is None and self.keep_vision_in_graph:
            size = self.model.processor.input_size
            blank = torch.zeros(1, 3, size, size, device=input_ids.device)
            loss = loss + 0.0 * self.model.encode_images(blank).float().sum()
        return loss


@contextlib.contextmanager
def miner_in_float32(model: nn.Module, device_type: str, active: bool) -> Iterator[None]:
    """Run the miner outside autocast, on float32 inputs, while ``active``.

    The mining op's fused backends write into float32 buffers in place, which autocast's
    bf16 matmuls cannot feed; the miner is small, so it runs in full precision.
    """
    if not active:
        yield
        return
    miner = model.miner
    forward = miner.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        args = tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)
        with torch.autocast(device_type, enabled=False):
            return forward(*args, **kwargs)

    miner.forward = run
    try:
        yield
    finally:
        del miner.forward


def param_groups(model: nn.Module, config: Any) -> list[dict[str, Any]]:
    """AdamW groups per slot, with and without weight decay (none on biases and norms)."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        slot = name.split(".", 1)[0]
        decay = p.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((slot, decay), []).append(p)
    return [{"params": params, "slot": slot,
             "lr": config.learning_rate * config.lr_multipliers.get(slot, 1.0),
             "weight_decay": config.weight_decay if decay else 0.0}
            for (slot, decay), params in groups.items()]


def supervised_count(batch: dict[str, Any] | None) -> int:
    """Tokens a causal LM is scored on: labels past each sequence's first position."""
    if batch is None:
        return 0
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
