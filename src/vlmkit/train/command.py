"""``vlmkit train``: a training run from a YAML file or a model config plus flags.

CONFIG is either a *training file* (a YAML/JSON mapping with a ``model`` key)::

    model: mgm-tiny            # preset name, model config file, or a saved model directory
    stage: pretrain            # pretrain | finetune
    data: data/train.json      # LLaVA-format records; paths relative to this file
    image_folder: data/images
    train: {max_steps: 20, per_device_batch_size: 2, global_batch_size: 4}   # TrainConfig fields

or a model (preset name, config file, saved model directory) with ``--data``. The model's
``training.<stage>`` block gives the defaults; ``train:`` and the flags override them. The same
command runs on one process or, under ``torchrun --nproc_per_node N -m vlmkit train ...``, on N.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vlmkit.loading import load

TRAIN_FILE_KEYS = ("model", "stage", "data", "image_folder", "train")


def read_train_file(config: str) -> dict[str, Any] | None:
    """The training file's mapping (paths made absolute), or None when CONFIG names a model."""
    path = Path(config)
    if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
        return None
    from vlmkit.config import ConfigError, read_mapping_file

    try:
        data = read_mapping_file(path)
    except ConfigError as err:
        if "expected a mapping" in str(err):
            return None
        raise click.ClickException(str(err)) from None
    if "model" not in data:
        return None
    unknown = sorted(set(data) - set(TRAIN_FILE_KEYS))
    if unknown:
        raise click.UsageError(f"{config}: unknown key(s) {unknown}; a training file has {TRAIN_FILE_KEYS}")
    for key in ("data", "image_folder", "model"):
        value = data.get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and (path.parent / value).exists():
            data[key] = str(path.parent / value)
    if not isinstance(data.get("train", {}), dict):
        raise click.UsageError(f"{config}: 'train' must be a mapping of TrainConfig fields")
    return data


@click.command("train")
@click.argument("config")
@click.option("--stage", type=click.Choice(["pretrain", "finetune"]), default=None,
              help="Training stage (default: the training file's, else finetune).")
@click.option("--data", "data", default=None, help="LLaVA-format JSON/JSON-lines records.")
@click.option("--image-folder", default=None, help="Folder that image paths resolve against.")
@click.option("--output-dir", default=None, help="Where checkpoints, metrics.jsonl and final/ go.")
@click.option("--max-steps", type=int, default=None, help="Optimiser steps to run.")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --output-dir.")
@click.option("--save-steps", type=int, default=None, help="Checkpoint every N steps.")
@click.option("--distributed", type=click.Choice(["auto", "ddp", "fsdp", "none"]), default=None,
              help="Data-parallel strategy under torchrun (default: DDP).")
@click.option("--lora-r", type=int, default=None, help="Train LoRA adapters of this rank on the LLM.")
@click.option("--seed", type=int, default=None, help="Seed for the model init and the data order.")
@click.option("--num-workers", type=int, default=None, help="Data-loading worker processes per process.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train_command(config: str, stage: str | None, data: str | None, image_folder: str | None,
                  output_dir: str | None, max_steps: int | None, resume: bool,
                  save_steps: int | None, distributed: str | None, lora_r: int | None,
                  seed: int | None, num_workers: int | None, no_progress: bool) -> None:
    """Train CONFIG (a training file, or a model with --data) and write OUTPUT_DIR/final."""
    import torch

    from vlmkit.data.llava import LlavaDataset
    from vlmkit.train.distributed import init_from_env
    from vlmkit.train.trainer import TrainConfig, Trainer

    spec = read_train_file(config) or {"model": config}
    stage = stage or spec.get("stage") or "finetune"
    data = data or spec.get("data")
    if data is None:
        raise click.UsageError("no training data: pass --data JSON or set 'data' in the training file")
    overrides: dict[str, Any] = dict(spec.get("train") or {})
    flags = {"output_dir": output_dir, "max_steps": max_steps, "save_steps": save_steps,
             "distributed": distributed, "seed": seed, "num_workers": num_workers}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if lora_r is not None:
        overrides["lora"] = {**(overrides.get("lora") or {}), "r": lora_r}
    if no_progress:
        overrides["progress"] = False
    if resume and not overrides.get("output_dir"):
        raise click.UsageError("--resume needs --output-dir (or output_dir in the training file)")
    info = init_from_env()
    seed_value = overrides.get("seed", 0)
    if isinstance(seed_value, bool) or not isinstance(seed_value, int):
        raise click.ClickException(f"seed must be an int, got {seed_value!r}")
    torch.manual_seed(seed_value)  # the same random init on every process
    try:
        model = load(str(spec["model"]), what="model")
        train_config = TrainConfig.from_preset(model.config, stage, **overrides)
        dataset = LlavaDataset(data, image_folder or spec.get("image_folder"), model,
                               template=train_config.chat_template,
                               max_length=train_config.max_length)
        trainer = Trainer(model, dataset, train_config)
        history = trainer.train(resume_from=True if resume else None)
    except (ValueError, OSError) as err:  # bad input, a missing file, a full disk
        raise click.ClickException(str(err)) from None
    finally:
        if info.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if info.is_main and history:
        last = history[-1]
        click.echo(f"step {last['step']}: loss {last['loss']:.4f}; skipped samples: {last['skipped']}")
        if train_config.output_dir:
            click.echo(f"saved {Path(train_config.output_dir) / 'final'}")
