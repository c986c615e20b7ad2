"""Mini-Gemini's two training stages as ``requires_grad`` settings (docs/architecture.md, "Training").

``pretrain``: the vision towers and the LLM are frozen; the miner and the projector learn.
``finetune`` (instruction tuning): the LLM, the miner and the projector learn; the towers stay
frozen. Under LoRA (:mod:`vlmkit.train.lora`) the LLM's own weights stay frozen and only its
adapters learn.
"""

from __future__ import annotations

from typing import Any

from vlmkit.config import MODULE_SLOTS

STAGES: dict[str, frozenset[str]] = {
    "pretrain": frozenset({"miner", "projector"}),
    "finetune": frozenset({"miner", "projector", "llm"}),
}


def count_parameters(module: Any) -> tuple[int, int]:
    """``(trainable, frozen)`` parameter counts of a module (``(0, 0)`` for None)."""
    trainable = frozen = 0
    if module is not None:
        for p in module.parameters():
            if p.requires_grad:
                trainable += p.numel()
            else:
                frozen += p.numel()
    return trainable, frozen


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; expected one of {sorted(STAGES)}")
    return stage


def apply_stage(model: Any, stage: str) -> dict[str, tuple[int, int]]:
    """Set ``requires_grad`` for ``stage`` and return ``{slot: (trainable, frozen)}`` counts.

    Switching stages on the same model is allowed (pretrain, then finetune). With LoRA applied to
    the LLM, only the adapter weights of the LLM are made trainable.
    """
    from vlmkit.train.lora import is_lora, lora_parameters

    trained = STAGES[check_stage(stage)]
    for slot in MODULE_SLOTS:
        module = getattr(model, slot, None)
        if module is None:
            continue
        module.requires_grad_(False)
        if slot not in trained:
            continue
        if slot == "llm" and is_lora(model):
            for p in lora_parameters(model):
                p.requires_grad_(True)
        else:
            module.requires_grad_(True)
    if stage == "pretrain" and is_lora(model):
        for p in lora_parameters(model):
            p.requires_grad_(False)
    return {slot: count_parameters(getattr(model, slot)) for slot in MODULE_SLOTS
            if getattr(model, slot, None) is not None}
