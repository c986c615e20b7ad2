"""The training loop: MGM's stages on LLaVA data, one process or many (DDP/FSDP under torchrun).

A step takes one *global batch* (``per_device_batch_size x grad_accum_steps x processes`` samples,
see :mod:`._sampling`) and makes one optimiser step. The loss is the mean over the supervised
tokens of the whole global batch: each micro-batch's summed token loss is divided by the global
token count (summed over processes first), so one process and N processes with the same global
batch compute the same loss and gradients. AdamW with per-slot learning-rate multipliers, a
transformers schedule (cosine with warmup by default), gradient clipping, bf16 autocast where the
hardware has it, and gradient checkpointing of the LLM. Checkpoints resume exactly
(:mod:`.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmkit.data.collate import Collator
from vlmkit._annotations import type_problem
from vlmkit.data.conversation import IGNORE_INDEX, get_template
from vlmkit.train import checkpoint as ckpt
from vlmkit.train._sampling import GlobalBatches, micro_batch_loader
from vlmkit.train._step import (
    TrainStep, param_groups, seed_everything, supervised_count,
)
from vlmkit.train.distributed import (
    STRATEGIES, DistInfo, all_sum, barrier, device_for, init_from_env, no_sync, wrap,
)
from vlmkit.train.lora import apply_lora, is_lora, load_lora, merge_lora, save_lora
from vlmkit.config import MODULE_SLOTS
from vlmkit.train.stages import apply_stage, check_stage

logger = logging.getLogger(__name__)

SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
             "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
FINAL_DIR = "final"
SKIPPED_FILE = "skipped.jsonl"
_FLOAT_FIELDS = ("learning_rate", "warmup_ratio", "weight_decay", "adam_eps", "max_grad_norm")


class TrainingError(ValueError):
    """A run that cannot give a model: e.g. every sample was skipped, so nothing was learned."""


def _as_float(name: str, value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string (it wants ``1.0e-3``); such strings are
    accepted as numbers. Other values are left for the annotation checks to name."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"invalid TrainConfig: {name} must be a number, got {value!r}") from None
    return value


@dataclass
class TrainConfig:
    """Hyperparameters of one training run.

    ``global_batch_size``, when set, fixes the samples per optimiser step and
    ``grad_accum_steps`` is derived from it (``global / (per_device_batch_size x processes)``).
    ``lr_multipliers``: per slot (``{"miner": 2.0, "projector": 2.0}``). ``bf16``: None picks
    autocast when the GPU supports bf16. ``lora``: ``peft.LoraConfig`` keywords to train LoRA
    adapters on the LLM instead of its weights (see :func:`~vlmkit.train.lora.apply_lora`).
    ``distributed``: ``"auto"`` (DDP under several processes), ``"ddp"``, ``"fsdp"`` or ``"none"``.
    ``num_workers``: data-loading worker processes per training process (0: load in-process).
    ``chat_template`` and ``max_length`` are for building the dataset (``vlmkit train`` passes
    them to :class:`~vlmkit.data.llava.LlavaDataset`); the trainer itself does not read them.
    """

    stage: str = "finetune"
    learning_rate: float = 2e-5
    max_steps: int = 100
    per_device_batch_size: int = 1
    grad_accum_steps: int = 1
    global_batch_size: int | None = None
    warmup_ratio: float = 0.03
    lr_schedule: str = "cosine"
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    output_dir: str | None = None
    save_steps: int = 0
    save_total_limit: int | None = None
    seed: int = 0
    log_every: int = 1
    group_by_length: bool = False
    progress: bool = True
    metrics_path: str | None = None
    chat_template: str | None = None
    max_length: int | None = None
    lora: dict[str, Any] | None = None
    distributed: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_stage(self.stage)
        problems = []
        for name in _FLOAT_FIELDS:
            setattr(self, name, _as_float(name, getattr(self, name)))
        for f in dataclasses.fields(self):  # each value has the kind its annotation names
            expected = type_problem(getattr(self, f.name), f.type)
            if expected is not None:
                problems.append(f"{f.name} must be {expected}, got {getattr(self, f.name)!r}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))
        betas = list(self.adam_betas)
        if len(betas) != 2 or type_problem(betas[0], "float") or type_problem(betas[1], "float"):
            problems.append(f"adam_betas must be two numbers, got {self.adam_betas!r}")
        bad = {k: v for k, v in self.lr_multipliers.items() if type_problem(v, "float")}
        if bad:
            problems.append(f"lr_multipliers must map slots to numbers, got {bad}")
        if self.chat_template is not None:
            try:
                get_template(self.chat_template)
            except ValueError as err:
                problems.append(f"chat_template: {err}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("max_steps", "per_device_batch_size", "grad_accum_steps", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            problems.append(f"global_batch_size must be >= 1, got {self.global_batch_size}")
        if not 0 <= self.warmup_ratio <= 1:
            problems.append(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.lr_schedule not in SCHEDULES:
            problems.append(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        unknown = sorted(set(self.lr_multipliers) - set(MODULE_SLOTS))
        if unknown:
            problems.append(f"lr_multipliers has unknown slot(s) {unknown}; slots are {list(MODULE_SLOTS)}")
        if self.distributed not in STRATEGIES:
            problems.append(f"distributed must be one of {STRATEGIES}, got {self.distributed!r}")
        if self.num_workers < 0:
            problems.append(f"num_workers must be >= 0, got {self.num_workers}")
        if self.save_steps < 0:
            problems.append(f"save_steps must be >= 0, got {self.save_steps}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]

    @classmethod
    def from_preset(cls, config: Any, stage: str, **overrides: Any) -> TrainConfig:
        """Defaults from the model config's ``training[stage]`` block, then ``overrides``.

        ``config``: a :class:`~vlmkit.config.VLMConfig` (``model.config``), preset name or path.
        The chat template falls back to the model's. Giving ``grad_accum_steps`` without
        ``global_batch_size`` drops the preset's global batch size.
        """
        from vlmkit.config import VLMConfig, load_config

        cfg = config if isinstance(config, VLMConfig) else load_config(config)
        block = dict((cfg.training or {}).get(check_stage(stage)) or {})
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(block) - valid)
        if unknown:
            raise ValueError(f"training.{stage} in the model config has unknown key(s) {unknown}; "
                             f"valid keys: {sorted(valid)}")
        bad = sorted(set(overrides) - valid)
        if bad:
            raise ValueError(f"unknown TrainConfig field(s) {bad}; valid fields: {sorted(valid)}")
        if "grad_accum_steps" in overrides and "global_batch_size" not in overrides:
            block.pop("global_batch_size", None)
        values = {**block, **overrides, "stage": stage}
        values.setdefault("chat_template", cfg.chat_template)
        return cls(**values)


class Trainer:
    """Train ``model`` on ``train_dataset`` (a :class:`~vlmkit.data.llava.LlavaDataset` or any
    dataset of such items) with ``config``. Under ``torchrun`` it joins the process group."""

    def __init__(self, model: Any, train_dataset: Any, config: TrainConfig, *,
                 collator: Any = None) -> None:
        self.model = model
        self.dataset = train_dataset
        self.config = config
        self.collator = collator or Collator(model.llm.tokenizer.pad_token_id)
        self.info: DistInfo = init_from_env()
        self.device = device_for(self.info)
        self.parameter_counts: dict[str, tuple[int, int]] = {}
        self.optimizer: Any = None  # set by train()
        self.scheduler: Any = None

    # ------------------------------------------------------------------ setup
    def accum_steps(self) -> int:
        cfg, world = self.config, self.info.world
        if cfg.global_batch_size is None:
            return cfg.grad_accum_steps
        per_step = cfg.per_device_batch_size * world
        if cfg.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size={cfg.global_batch_size} is not a multiple of "
                f"per_device_batch_size={cfg.per_device_batch_size} x {world} process(es)")
        return cfg.global_batch_size // per_step

    def _bf16(self) -> bool:
        if self.config.bf16 is None:
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return self.config.bf16

    def _plan(self) -> GlobalBatches:
        cfg = self.config
        lengths = None
        if cfg.group_by_length:
            if not hasattr(self.dataset, "lengths"):
                raise ValueError("group_by_length needs a dataset with a lengths() method")
            lengths = self.dataset.lengths()
        return GlobalBatches(len(self.dataset), per_device=cfg.per_device_batch_size,
                             accum=self.accum_steps(), world=self.info.world, seed=cfg.seed,
                             lengths=lengths)

    # ------------------------------------------------------------------ checkpoints
    @property
    def sharded(self) -> bool:
        return self.info.enabled and self.config.distributed == "fsdp"

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's full weights (on CPU). Under FSDP this gathers the shards: every process
        must call it, and only process 0 gets the tensors (the others an empty dict)."""
        if not self.sharded:
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self._step_module, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))
        return {k[len("model."):]: v for k, v in full.items()}

    def _optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        """The optimiser's full state keyed by parameter name (the same form under 1 process,
        DDP and FSDP, so a checkpoint resumes under any of them); collective under FSDP."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self._step_module, optimizer, options=StateDictOptions(
            full_state_dict=True, cpu_offload=self.sharded))

    def _load_optimizer_state(self, optimizer: Any, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self._step_module, optimizer, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True))

    def _write_weights(self, folder: Path, weights: dict[str, torch.Tensor]) -> None:
        from vlmkit._checkpoint import save_model

        if is_lora(self.model):
            save_lora(self.model, folder / "adapter")
        else:
            save_model(self.model, folder / "model", state_dict=weights)

    def save_checkpoint(self, step: int, plan: GlobalBatches, optimizer: Any, scheduler: Any) -> Path:
        """Write ``<output_dir>/checkpoint-<step>`` (every process calls it)."""
        cfg = self.config
        weights = self.full_state_dict()
        optimizer_state = self._optimizer_state(optimizer)
        skipped = getattr(self.dataset, "skipped", {})
        state = {"step": step, "sampler": plan.state(step), "config": dataclasses.asdict(cfg),
                 "skipped": len(skipped),
                 "skipped_samples": [dataclasses.asdict(s) for s in skipped.values()
                                     if dataclasses.is_dataclass(s)]}
        return ckpt.save_checkpoint(
            cfg.output_dir, step, info=self.info,
            write_weights=lambda folder: self._write_weights(folder, weights),
            optimizer_state=optimizer_state, scheduler_state=scheduler.state_dict(),
            trainer_state=state, keep_last=cfg.save_total_limit)

    def _load_weights(self, checkpoint: Path) -> None:
        from vlmkit._checkpoint import load_state

        if (checkpoint / "adapter").is_dir():
            if not is_lora(self.model):
                raise ValueError(f"{checkpoint} holds LoRA adapters but the run has no `lora` config")
            load_lora(self.model, checkpoint / "adapter")
        else:
            self.model.load_state_dict(load_state(checkpoint / "model"))

    # ------------------------------------------------------------------ training
    def _empty_batch(self) -> dict[str, Any]:
        pad = getattr(self.collator, "pad_token_id", None)
        pad = self.model.llm.tokenizer.pad_token_id if pad is None else pad
        return {"input_ids": torch.full((1, 2), pad, dtype=torch.long),
                "attention_mask": torch.ones(1, 2, dtype=torch.long),
                "labels": torch.full((1, 2), IGNORE_INDEX, dtype=torch.long), "images": None}

    def train(self, resume_from: str | Path | bool | None = None) -> list[dict[str, Any]]:
        """Run to ``config.max_steps``; returns the metrics of the steps run by this call
        (``{"step", "loss", "lr", "grad_norm", "samples", "tokens", "skipped", "samples_per_s"}``).

        ``resume_from``: a checkpoint folder, an output folder (its latest checkpoint) or True
        (the latest in ``config.output_dir``); training continues exactly where it stopped.
        Seeds Python, NumPy and torch with ``config.seed`` first; applies LoRA (``config.lora``)
        and the stage's ``requires_grad`` to the model in place.
        """
        cfg, info, model = self.config, self.info, self.model
        seed_everything(cfg.seed)
        if cfg.lora is not None and not is_lora(model):
            apply_lora(model, **cfg.lora)
        self.parameter_counts = apply_stage(model, cfg.stage)
        if cfg.gradient_checkpointing:
            model.llm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        model.to(self.device)
        model.train()
        plan = self._plan()
        checkpoint = None
        if resume_from is not None and resume_from is not False:
            checkpoint = ckpt.resolve_resume(resume_from, cfg.output_dir)
            self._load_weights(checkpoint)
        strategy = "ddp" if cfg.distributed == "auto" else cfg.distributed
        if strategy == "fsdp" and is_lora(model):
            raise ValueError("LoRA under FSDP is not supported; use distributed='ddp'")
        step_module = wrap(TrainStep(model, keep_vision_in_graph=info.enabled), strategy, info)
        self._step_module = step_module
        optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.learning_rate,
                                      betas=cfg.adam_betas, eps=cfg.adam_eps)
        from transformers import get_scheduler

        scheduler = get_scheduler(cfg.lr_schedule, optimizer,
                                  num_warmup_steps=math.ceil(cfg.warmup_ratio * cfg.max_steps),
                                  num_training_steps=cfg.max_steps)
        self.optimizer, self.scheduler = optimizer, scheduler
        start = 0
        if checkpoint is not None:
            start = self._restore(checkpoint, plan, optimizer, scheduler)
        return self._loop(start, plan, step_module, optimizer, scheduler)

    def _restore(self, checkpoint: Path, plan: GlobalBatches, optimizer: Any, scheduler: Any) -> int:
        state = ckpt.read_state(checkpoint, self.info)
        start = int(state["step"])
        expected, saved = plan.state(start), state["sampler"]
        differ = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
        if differ:
            raise ValueError(f"{checkpoint}: the data plan differs from the checkpoint's "
                             f"(key: (saved, now)) {differ}; resume with the same data, seed and "
                             "global batch")
        if start > self.config.max_steps:
            raise ValueError(f"{checkpoint} is at step {start}, past max_steps={self.config.max_steps}")
        self._load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["rng"] is not None:
            ckpt.set_rng_state(state["rng"])
        self._restore_skipped(state.get("skipped_samples") or [])
        logger.info("resumed from %s at step %d", checkpoint, start)
        return start

    def _restore_skipped(self, saved: list[dict[str, Any]]) -> None:
        """Put the samples skipped before the checkpoint back into the dataset's record, so
        ``skipped.jsonl`` lists the same samples as an uninterrupted run."""
        skipped = getattr(self.dataset, "skipped", None)
        if not isinstance(skipped, dict) or not saved:
            return
        from vlmkit.data.llava import Skipped

        for entry in saved:
            skipped.setdefault(int(entry["index"]), Skipped(**entry))

    def _metrics_file(self, start: int) -> Path | None:
        cfg = self.config
        path = cfg.metrics_path or (Path(cfg.output_dir) / "metrics.jsonl" if cfg.output_dir else None)
        if path is None or not self.info.is_main:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if start and path.is_file():  # drop what a crashed run logged after its last checkpoint
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start]
        path.write_text("".join(line + "\n" for line in kept))
        return path

    def _loop(self, start: int, plan: GlobalBatches, step_module: nn.Module, optimizer: Any,
              scheduler: Any) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        cfg, info, device = self.config, self.info, self.device
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self._bf16())
        metrics_path = self._metrics_file(start)
        bar = tqdm(total=cfg.max_steps, initial=start, desc=f"train {cfg.stage}", unit="step",
                   disable=not (cfg.progress and info.is_main), dynamic_ncols=True)
        history: list[dict[str, Any]] = []
        self._steps(start, plan, step_module, optimizer, scheduler, trainable, autocast,
                    metrics_path, bar, history)
        bar.close()
        if history and not any(record["tokens"] for record in history):
            if cfg.output_dir and info.is_main:
                self._write_skipped(Path(cfg.output_dir))
            raise TrainingError(
                f"no sample had anything to learn from in steps {start + 1}-{cfg.max_steps} "
                f"({history[-1]['skipped']} skipped"
                + (f", listed in {Path(cfg.output_dir) / SKIPPED_FILE}" if cfg.output_dir else "")
                + "); no final model was written"
            )
        if cfg.output_dir:
            self.save_final(Path(cfg.output_dir))
        return history

    def _steps(self, start: int, plan: GlobalBatches, step_module: nn.Module, optimizer: Any,
               scheduler: Any, trainable: list[nn.Parameter], autocast: Any,
               metrics_path: Path | None, bar: Any, history: list[dict[str, Any]]) -> None:
        cfg, info, device = self.config, self.info, self.device
        batches = micro_batch_loader(self.dataset, self.collator, plan, rank=info.rank, start=start,
                                     stop=cfg.max_steps, num_workers=cfg.num_workers,
                                     pin_memory=device.type == "cuda")
        for step in range(start, cfg.max_steps):
            began = time.perf_counter()
            micro = [next(batches) for _ in range(plan.accum)]
            local = torch.tensor([sum(supervised_count(b) for b in micro),
                                  sum(b["input_ids"].shape[0] for b in micro if b is not None)])
            totals = all_sum(local, info)
            num_items = totals[0].clamp(min=1).to(device)
            loss_sum = torch.zeros((), device=device)
            for a, batch in enumerate(micro):
                if batch is None:
                    if not info.enabled:
                        continue
                    batch = self._empty_batch()
                inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                with no_sync(step_module, active=info.enabled and a < len(micro) - 1):
                    with autocast:
                        loss = step_module(**inputs, num_items=num_items)
                    if loss.requires_grad:  # e.g. text-only samples in pretrain: nothing to learn
                        (loss * info.world).backward()
                loss_sum += loss.detach().float()
            grad_norm = None
            if cfg.max_grad_norm:
                norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(all_sum(loss_sum, info))
            skipped = int(all_sum(torch.tensor(len(getattr(self.dataset, "skipped", ()))), info))
            elapsed = time.perf_counter() - began
            record = {"step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                      "samples": int(totals[1]), "tokens": int(totals[0]), "skipped": skipped,
                      "samples_per_s": int(totals[1]) / elapsed if elapsed > 0 else None}
            history.append(record)
            if metrics_path is not None and (step + 1) % cfg.log_every == 0:
                with metrics_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}",
                            samples_s=f"{record['samples_per_s']:.1f}", refresh=False)
            bar.update(1)
            if cfg.output_dir and cfg.save_steps and ((step + 1) % cfg.save_steps == 0
                                                     or step + 1 == cfg.max_steps):
                self.save_checkpoint(step + 1, plan, optimizer, scheduler)

    def save_final(self, output_dir: Path) -> Path:
        """``<output_dir>/final``: the trained model, loadable with ``from_pretrained``. Under LoRA
        the adapters are written to ``<output_dir>/adapter`` first, then merged into the LLM."""
        from vlmkit._checkpoint import save_model

        final = output_dir / FINAL_DIR
        weights = None if is_lora(self.model) else self.full_state_dict()
        if self.info.is_main:
            if is_lora(self.model):
                save_lora(self.model, output_dir / "adapter")
                merge_lora(self.model)
            save_model(self.model, final, state_dict=weights)
            self._write_skipped(output_dir)
        barrier(self.info)
        return final

    def _write_skipped(self, output_dir: Path) -> None:
        skipped = getattr(self.dataset, "skipped", {})
        if skipped:
            logger.warning("%d sample(s) were skipped on process 0; see %s", len(skipped),
                           output_dir / SKIPPED_FILE)
            output_dir.mkdir(parents=True, exist_ok=True)
            ordered = sorted(skipped.values(), key=lambda s: s.index)
            (output_dir / SKIPPED_FILE).write_text("".join(
                json.dumps(dataclasses.asdict(s)) + "\n" for s in ordered))
