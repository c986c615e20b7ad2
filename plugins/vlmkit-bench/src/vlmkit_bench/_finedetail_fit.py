"""Stages 1 and 2 of the fine-detail benchmark: the one place that trains a composition.

It runs the library's own trainer (:class:`vlmkit.train.trainer.Trainer`, MGM's stages through
:func:`vlmkit.train.stages.apply_stage`: ``pretrain`` trains miner + projector, ``finetune`` adds
the LLM; the towers stay frozen), AdamW with warmup and cosine decay, gradients clipped at 1.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from vlmkit.data.collate import Collator
from vlmkit.train.trainer import Trainer, TrainConfig


def collator(model: Any) -> Collator:
    """The LLaVA collator for ``model``'s tokenizer."""
    return Collator(model.llm.tokenizer.pad_token_id)


def fit(
    model: Any,
    items: Sequence[dict[str, Any]],
    *,
    stage: str,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    lr_multipliers: dict[str, float] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place for ``steps`` optimiser steps of ``batch`` items (LLaVA dataset
    items ``{"input_ids", "labels", "pixels", "id"}``). Returns ``{"wall_s", "cpu_s", "loss"}``
    (the last step's loss). ``lr_multipliers``: per slot, as :class:`TrainConfig` takes them."""
    config = TrainConfig(stage=stage, learning_rate=lr, max_steps=steps,
                         per_device_batch_size=batch, warmup_ratio=0.03, lr_schedule="cosine",
                         max_grad_norm=1.0, seed=seed, progress=progress, distributed="none",
                         lr_multipliers=dict(lr_multipliers or {}))  # fmt: skip
    wall, cpu = time.perf_counter(), time.process_time()
    history = Trainer(model, list(items), config, collator=collator(model)).train()
    model.eval()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "loss": history[-1]["loss"] if history else float("nan")}  # fmt: skip
