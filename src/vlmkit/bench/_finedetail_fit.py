"""Stages 1 and 2 of the fine-detail benchmark: the one place that trains a composition.

Stand-in for :mod:`vlmkit.train` until it lands: the same contract (``apply_stage`` picks the
trainable parts, a collator pads, AdamW with warmup and cosine decay), so moving to
``vlmkit.train.trainer.Trainer`` changes this file only.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch

from vlmkit.data.conversation import IGNORE_INDEX


def _apply_stage(model: Any, stage: str) -> None:
    """MGM's stages: ``pretrain`` trains miner + projector; ``finetune`` also the LLM. Towers stay frozen."""
    if stage not in ("pretrain", "finetune"):
        raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")
    model.requires_grad_(False)
    model.miner.requires_grad_(True)
    model.projector.requires_grad_(True)
    if stage == "finetune":
        model.llm.requires_grad_(True)


def collate(items: Sequence[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids``/``labels``; stack ``pixels`` into ``images``."""
    length = max(int(i["input_ids"].shape[0]) for i in items)
    ids = torch.full((len(items), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    for b, item in enumerate(items):
        n = item["input_ids"].shape[0]
        ids[b, :n], labels[b, :n], mask[b, :n] = item["input_ids"], item["labels"], 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "images": torch.stack([i["pixels"] for i in items])}


def fit(
    model: Any,
    items: Sequence[dict[str, torch.Tensor]],
    *,
    stage: str,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place for ``steps`` batches of ``batch`` items drawn without replacement
    per epoch. Returns ``{"wall_s", "cpu_s", "loss"}`` (the last step's loss)."""
    _apply_stage(model, stage)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, round(0.03 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))),
    )
    generator = torch.Generator().manual_seed(seed)
    pad = model.llm.tokenizer.pad_token_id
    order: list[int] = []
    wall, cpu = time.perf_counter(), time.process_time()
    loss_value = float("nan")
    for step in range(steps):
        if len(order) < batch:
            order += torch.randperm(len(items), generator=generator).tolist()
        chosen, order = order[:batch], order[batch:]
        inputs = collate([items[i] for i in chosen], pad)
        loss = model(**inputs).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if progress is not None:
            progress(step + 1, loss_value)
    model.eval()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "loss": loss_value}
