"""The training loop: frozen parts stay put, stages switch, accumulation is exact, checkpoints
resume to the same loss curve step for step, schedules and multipliers, bad data is survived."""

import json
import math
import shutil

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import vlmkit
from vlmkit.train import checkpoint as ckpt
from vlmkit.train.stages import apply_stage
from vlmkit.train.trainer import TrainConfig, Trainer

from .conftest import dataset, tiny_model

FAST = {"progress": False, "warmup_ratio": 0.0}


def _config(model, stage="finetune", **kw):
    return TrainConfig.from_preset(model.config, stage, **{**FAST, **kw})


def _slots(model):
    return {slot: {k: v.detach().clone() for k, v in getattr(model, slot).state_dict().items()}
            for slot in ("lr_encoder", "hr_encoder", "miner", "projector", "llm")}


def _changed(before, model, slot):
    after = getattr(model, slot).state_dict()
    return any(not torch.equal(v, after[k]) for k, v in before[slot].items())


@pytest.mark.parametrize("stage, trained", [("pretrain", {"miner", "projector"}),
                                             ("finetune", {"miner", "projector", "llm"})])
def test_frozen_parts_unchanged_after_a_step(stage, trained, tiny_data):
    model = tiny_model()
    before = _slots(model)
    cfg = _config(model, stage, max_steps=1, per_device_batch_size=4, grad_accum_steps=1,
                  learning_rate=1e-2)
    trainer = Trainer(model, dataset(model, tiny_data), cfg)
    history = trainer.train()
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    for slot in before:
        assert _changed(before, model, slot) == (slot in trained), slot
    counts = trainer.parameter_counts
    assert counts["lr_encoder"][0] == counts["hr_encoder"][0] == 0
    assert (counts["llm"][0] > 0) == (stage == "finetune")


def test_stage_switching_on_one_model(tiny_data):
    model = tiny_model()
    total_llm = sum(p.numel() for p in model.llm.parameters())
    pre = apply_stage(model, "pretrain")
    assert pre["llm"] == (0, total_llm) and pre["miner"][1] == 0 and pre["projector"][1] == 0
    fine = apply_stage(model, "finetune")
    assert fine["llm"] == (total_llm, 0)
    assert fine["lr_encoder"][0] == 0 and fine["hr_encoder"][0] == 0
    assert apply_stage(model, "pretrain") == pre
    with pytest.raises(ValueError, match="unknown training stage 'sft'.*finetune"):
        apply_stage(model, "sft")
    # Stage 1 then stage 2 on the same model: only stage 2 moves the LLM.
    data = dataset(model, tiny_data)
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    Trainer(model, data, _config(model, "pretrain", max_steps=1, per_device_batch_size=4)).train()
    assert all(torch.equal(v, model.llm.state_dict()[k]) for k, v in llm_before.items())
    Trainer(model, data, _config(model, "finetune", max_steps=1, per_device_batch_size=4)).train()
    assert any(not torch.equal(v, model.llm.state_dict()[k]) for k, v in llm_before.items())


def test_accumulation_matches_one_big_batch(tiny_data):
    runs = []
    for per_device, accum in ((4, 1), (2, 2), (1, 4)):
        model = tiny_model()
        cfg = _config(model, max_steps=3, per_device_batch_size=per_device, grad_accum_steps=accum,
                      learning_rate=1e-3)
        history = Trainer(model, dataset(model, tiny_data), cfg).train()
        runs.append(([h["loss"] for h in history], model.projector.state_dict()))
    for losses, state in runs[1:]:
        assert losses == pytest.approx(runs[0][0], rel=1e-5)
        for k, v in state.items():
            torch.testing.assert_close(v, runs[0][1][k], rtol=1e-4, atol=1e-6)


def test_resume_gives_the_same_loss_curve(tiny_data, tmp_path):
    def config(model, out, **kw):
        return _config(model, max_steps=6, per_device_batch_size=2, grad_accum_steps=2,
                       learning_rate=1e-3, warmup_ratio=0.2, output_dir=str(out), save_steps=3,
                       group_by_length=True, **kw)

    model = tiny_model()
    full = Trainer(model, dataset(model, tiny_data), config(model, tmp_path / "a")).train()
    assert [h["step"] for h in full] == [1, 2, 3, 4, 5, 6]  # 2 steps per epoch: crosses epochs
    # A new process: other initial weights, other RNG state, the step-3 checkpoint only.
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    torch.manual_seed(1234)
    other = tiny_model(seed=99)
    resumed = Trainer(other, dataset(other, tiny_data), config(other, tmp_path / "b")).train(
        resume_from=True)
    assert [h["step"] for h in resumed] == [4, 5, 6]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in full[3:]]
    assert [h["lr"] for h in resumed] == [h["lr"] for h in full[3:]]
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    log = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 5, 6]


def test_checkpoints_are_complete_rotated_and_loadable(tiny_data, tmp_path):
    model = tiny_model()
    cfg = _config(model, max_steps=4, per_device_batch_size=4, output_dir=str(tmp_path),
                  save_steps=1, save_total_limit=2)
    history = Trainer(model, dataset(model, tiny_data), cfg).train()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-3", "checkpoint-4", "final", "metrics.jsonl"]
    state = json.loads((tmp_path / "checkpoint-4" / ckpt.STATE_FILE).read_text())
    assert state["step"] == 4 and state["sampler"]["global_batch"] == 8  # the preset's
    assert {p.name for p in (tmp_path / "checkpoint-4").iterdir()} == {
        "model", "optimizer.pt", "scheduler.pt", "rng_state_0.pt", ckpt.STATE_FILE}
    loaded = vlmkit.VisionLanguageModel.from_pretrained(tmp_path / "final")
    ids = torch.tensor([[1, 70, 80, 90]])
    model.eval()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == [h["loss"] for h in history]


def test_schedule_and_lr_multipliers(tiny_data):
    model = tiny_model()
    cfg = _config(model, max_steps=10, per_device_batch_size=4, learning_rate=1e-3,
                  warmup_ratio=0.2, lr_multipliers={"projector": 2.0})
    trainer = Trainer(model, dataset(model, tiny_data), cfg)
    history = trainer.train()
    warmup = 2
    for h in history:
        s = h["step"] - 1
        expected = 1e-3 * (s / warmup if s < warmup else
                           0.5 * (1 + math.cos(math.pi * (s - warmup) / (10 - warmup))))
        assert h["lr"] == pytest.approx(expected, abs=1e-12)
    lrs = {g["slot"]: g["initial_lr"] for g in trainer.optimizer.param_groups}
    assert lrs["projector"] == pytest.approx(2e-3) and lrs["llm"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="unknown slot.*'projecter'"):
        TrainConfig(lr_multipliers={"projecter": 2.0})


def test_gradient_checkpointing_and_bf16_autocast(tiny_data):
    losses = {}
    for name, kw in {"plain": {}, "ckpt": {"gradient_checkpointing": True},
                     "bf16": {"bf16": True}}.items():
        model = tiny_model()
        cfg = _config(model, max_steps=2, per_device_batch_size=4, learning_rate=1e-3, **kw)
        losses[name] = [h["loss"] for h in Trainer(model, dataset(model, tiny_data), cfg).train()]
        if name == "ckpt":
            assert model.llm.model.is_gradient_checkpointing
    assert losses["ckpt"] == pytest.approx(losses["plain"], rel=1e-5)
    assert losses["bf16"] == pytest.approx(losses["plain"], rel=5e-2)
    assert losses["bf16"] != losses["plain"]  # autocast really ran in bf16


def test_bad_samples_are_skipped_and_reported(tiny_data, tmp_path):
    records = json.loads(tiny_data.read_text())
    records[0]["image"] = "images/missing.png"
    (tmp_path / "data.json").write_text(json.dumps(records))
    runs = {}
    for workers in (0, 2):  # worker processes report what they skipped, too
        model = tiny_model()
        data = dataset(model, tmp_path / "data.json")
        data.image_folder = tiny_data.parent
        out = tmp_path / f"out{workers}"
        cfg = _config(model, max_steps=2, per_device_batch_size=4, output_dir=str(out),
                      num_workers=workers)
        history = Trainer(model, data, cfg).train()
        assert all(math.isfinite(h["loss"]) for h in history)
        assert history[-1]["skipped"] == 1
        assert [h["samples"] for h in history] == [7, 7]  # one epoch per step, one sample skipped
        report = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
        assert report[0]["id"] == records[0]["id"]
        assert report[0]["path"] == str(tiny_data.parent / "images" / "missing.png")
        runs[workers] = [h["loss"] for h in history]
    assert runs[0] == runs[2]


def test_from_preset_defaults_and_errors():
    config = vlmkit.load_config("mgm-7b")
    pre = TrainConfig.from_preset(config, "pretrain")
    assert (pre.learning_rate, pre.global_batch_size, pre.chat_template) == (1e-3, 256, "plain")
    assert pre.lr_schedule == "cosine" and pre.warmup_ratio == 0.03
    fine = TrainConfig.from_preset(config, "finetune", grad_accum_steps=4)
    assert fine.learning_rate == 2e-5 and fine.chat_template == "vicuna_v1"
    assert fine.global_batch_size is None and fine.grad_accum_steps == 4
    with pytest.raises(ValueError, match="unknown TrainConfig field.*'lr'"):
        TrainConfig.from_preset(config, "finetune", lr=1.0)
    with pytest.raises(ValueError, match="max_steps must be an int >= 1"):
        TrainConfig(max_steps=0)


def test_global_batch_must_divide(tiny_data):
    model = tiny_model()
    cfg = _config(model, max_steps=1, per_device_batch_size=3, global_batch_size=8)
    with pytest.raises(ValueError, match="global_batch_size=8 is not a multiple of per_device_batch_size=3"):
        Trainer(model, dataset(model, tiny_data), cfg).train()
    cfg = _config(model, max_steps=1, per_device_batch_size=4, global_batch_size=16)
    with pytest.raises(ValueError, match="8 samples, fewer than one global batch of 16"):
        Trainer(model, dataset(model, tiny_data), cfg).train()


def test_gradients_are_clipped_before_the_step(tiny_data):
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        model = tiny_model()
        cfg = _config(model, max_steps=2, per_device_batch_size=4, max_grad_norm=0.01)
        history = Trainer(model, dataset(model, tiny_data), cfg).train()
    finally:
        handle.remove()
    assert all(h["grad_norm"] > 0.01 for h in history)  # the metric is the norm before clipping
    assert norms == pytest.approx([0.01, 0.01], rel=1e-3)
