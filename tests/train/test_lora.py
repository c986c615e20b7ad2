"""LoRA through peft: adapters only inside the LLM, miner + projector trained and saved beside
them, adapters save/load, merge gives a plain model with the same outputs, exact resume."""

import shutil

import pytest
import torch

import vlmkit
from vlmkit.train.lora import (
    NON_LORA_FILE, apply_lora, is_lora, load_lora, lora_module_names, merge_lora, save_lora,
)
from vlmkit.train.stages import apply_stage
from vlmkit.train.trainer import TrainConfig, Trainer

from .conftest import dataset, tiny_model

IDS = torch.tensor([[1, 70, 80, 90, 100]])


def _config(model, **kw):
    return TrainConfig.from_preset(model.config, "finetune", progress=False, warmup_ratio=0.0,
                                   learning_rate=1e-2, per_device_batch_size=4,
                                   grad_accum_steps=1, lora={"r": 4}, **kw)


def test_targets_only_llm_modules():
    model = apply_lora(tiny_model())
    names = lora_module_names(model)
    assert names and all(name.startswith("llm.") for name in names)
    assert any(name.endswith("q_proj") for name in names)
    assert not any(name.endswith("lm_head") for name in names)
    for tower in ("lr_encoder", "hr_encoder", "miner", "projector"):
        assert not any("lora_" in n for n, _ in getattr(model, tower).named_parameters())
    counts = apply_stage(model, "finetune")
    lora_numel = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    assert counts["llm"][0] == lora_numel
    assert counts["lr_encoder"][0] == counts["hr_encoder"][0] == 0
    assert counts["miner"][1] == counts["projector"][1] == 0
    assert apply_stage(model, "pretrain")["llm"][0] == 0
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model)


def test_training_saving_loading_and_merging(tiny_data, tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, dataset(model, tiny_data), _config(model, max_steps=2)).train()
    assert is_lora(model)
    base = model.llm.model.get_base_model()
    assert torch.equal(base.model.layers[0].self_attn.q_proj.base_layer.weight,
                       before["llm.model.model.layers.0.self_attn.q_proj.weight"])
    for slot in ("lr_encoder", "hr_encoder"):
        assert all(torch.equal(v, before[f"{slot}.{k}"]) for k, v in getattr(model, slot).state_dict().items())
    assert not torch.equal(model.projector.state_dict()["0.weight"], before["projector.0.weight"])
    model.eval()
    with torch.no_grad():
        trained = model(IDS).logits
    save_lora(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / NON_LORA_FILE).is_file()
    # The same base (same seed), the adapters and the miner/projector from the folder.
    other = load_lora(tiny_model(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(other(IDS).logits, trained)
    merge_lora(other)
    assert not is_lora(other)
    other.save_pretrained(tmp_path / "merged")
    loaded = vlmkit.VisionLanguageModel.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, trained, rtol=1e-4, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_lora(tiny_model(), tmp_path / "merged")


def test_trainer_output_and_exact_resume(tiny_data, tmp_path):
    model = tiny_model()
    full = Trainer(model, dataset(model, tiny_data),
                   _config(model, max_steps=4, output_dir=str(tmp_path / "a"), save_steps=2)).train()
    assert (tmp_path / "a" / "checkpoint-2" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "a" / "adapter" / NON_LORA_FILE).is_file()
    vlmkit.VisionLanguageModel.from_pretrained(tmp_path / "a" / "final")  # merged, plain
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    other = tiny_model()  # LoRA checkpoints hold the adapters; the base comes from the config
    resumed = Trainer(other, dataset(other, tiny_data),
                      _config(other, max_steps=4, output_dir=str(tmp_path / "b"), save_steps=2)
                      ).train(resume_from=tmp_path / "b")
    assert [h["loss"] for h in resumed] == [h["loss"] for h in full[2:]]
