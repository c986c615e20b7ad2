"""LoRA on the LLM through peft: apply, save and load adapters, merge for export.

Adapters go only into the LLM (its ``backbone()`` becomes a ``peft.PeftModel``); the vision towers
are never touched. The miner and projector are trained in full beside the adapters (the
``modules_to_save`` role) and saved with them as ``non_lora_trainables.safetensors``. The LLM may be
quantised (QLoRA): peft's ``prepare_model_for_kbit_training`` runs when the backbone is loaded in
4 or 8 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

NON_LORA_FILE = "non_lora_trainables.safetensors"
SAVED_ALONGSIDE = ("miner", "projector")


def is_lora(model: Any) -> bool:
    """Whether the model's LLM carries peft adapters."""
    from peft import PeftModel

    backbone = getattr(model.llm, "backbone", None)
    return backbone is not None and isinstance(backbone(), PeftModel)


def lora_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The adapter weights inside the LLM (empty without LoRA)."""
    if not is_lora(model):
        return []
    return [p for name, p in model.llm.backbone().named_parameters() if "lora_" in name]


def apply_lora(
    model: Any,
    *,
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: str | list[str] | None = None,
    **lora_kwargs: Any,
) -> Any:
    """Wrap the model's LLM with LoRA adapters (in place) and return the model.

    ``target_modules``: names (or ``"all-linear"``: every linear layer but the output head) inside
    the LLM, default the LLM's ``lora_target_modules`` (``"all-linear"``); the towers, miner and projector are outside its reach by construction. Extra keyword
    arguments go to ``peft.LoraConfig``.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if is_lora(model):
        raise ValueError("this model's LLM already has LoRA adapters")
    backbone = model.llm.backbone()
    if target_modules is None:
        target_modules = model.llm.lora_target_modules
    if getattr(backbone, "is_loaded_in_4bit", False) or getattr(backbone, "is_loaded_in_8bit", False):
        backbone = prepare_model_for_kbit_training(backbone)
    config = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                        target_modules=target_modules, task_type="CAUSAL_LM", **lora_kwargs)
    model.llm.set_backbone(get_peft_model(backbone, config))
    return model


def lora_module_names(model: Any) -> list[str]:
    """Full names (from the VisionLanguageModel) of the modules that carry adapters."""
    from peft.tuners.lora import LoraLayer

    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def non_lora_state(model: Any) -> dict[str, torch.Tensor]:
    """The miner's and projector's weights, keyed as in the full model (``miner.*``, ``projector.*``)."""
    return {f"{slot}.{k}": v.detach().cpu().contiguous()
            for slot in SAVED_ALONGSIDE for k, v in getattr(model, slot).state_dict().items()}


def save_lora(model: Any, directory: str | Path) -> None:
    """Write the adapters (peft's ``adapter_config.json`` + ``adapter_model.safetensors``) and the
    miner and projector weights into ``directory``."""
    if not is_lora(model):
        raise ValueError("the model has no LoRA adapters to save; call apply_lora first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.llm.backbone().save_pretrained(str(directory))
    save_file(non_lora_state(model), str(directory / NON_LORA_FILE), metadata={"format": "pt"})


def load_lora(model: Any, directory: str | Path, *, is_trainable: bool = False) -> Any:
    """Load adapters written by :func:`save_lora` into a model built from the same config.

    A model that already has adapters gets their weights replaced; otherwise they are attached.
    """
    from peft import PeftModel, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{directory} has no adapter_config.json: not a LoRA adapter directory")
    if is_lora(model):
        result = set_peft_model_state_dict(model.llm.backbone(), load_peft_weights(str(directory)))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{directory}: unexpected adapter weights {result.unexpected_keys[:5]}")
    else:
        model.llm.set_backbone(PeftModel.from_pretrained(model.llm.backbone(), str(directory),
                                                         is_trainable=is_trainable))
    extra = directory / NON_LORA_FILE
    if extra.is_file():
        state = load_file(str(extra))
        for slot in SAVED_ALONGSIDE:
            prefix = f"{slot}."
            getattr(model, slot).load_state_dict(
                {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return model


def merge_lora(model: Any) -> Any:
    """Fold the adapters into the LLM's weights (in place) so the model saves and loads as a plain
    :class:`~vlmkit.model.VisionLanguageModel`; returns the model."""
    if not is_lora(model):
        raise ValueError("the model has no LoRA adapters to merge")
    model.llm.set_backbone(model.llm.backbone().merge_and_unload())
    return model
