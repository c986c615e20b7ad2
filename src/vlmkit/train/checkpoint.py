"""Training checkpoints that resume exactly: weights, optimiser, scheduler, RNG and data position.

Layout of ``<output_dir>/checkpoint-<step>/``:

- ``model/``: the model as :meth:`~vlmkit.model.VisionLanguageModel.save_pretrained` writes it
  (safetensors; loadable with ``from_pretrained``), or ``adapter/`` under LoRA (:mod:`.lora`);
- ``optimizer.pt``, ``scheduler.pt``: their state dicts (tensors and numbers only, read back with
  ``torch.load(weights_only=True)``);
- ``rng_state_<rank>.pt``: each process's torch / CUDA / Python / NumPy generator states;
- ``trainer_state.json``: the step, the data plan's position, the skipped samples, the config.

A checkpoint is written into a temporary folder and renamed when complete, so a crash never leaves
a half-written ``checkpoint-<step>``; ``keep_last`` older ones are deleted after each save, each
renamed to ``.deleting-checkpoint-<step>`` first, so a crash during a deletion never leaves a
partial folder under a checkpoint's name. A checkpoint counts as complete only when its state,
optimiser and scheduler files and its weights' index are all there. Leftover temporary and
half-deleted folders of a killed run are removed at the next save.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmkit._files import read_json
from vlmkit._replace import replace_directory
from vlmkit.train.distributed import DistInfo, barrier

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_LEFTOVER = re.compile(r"^\.(tmp|deleting)-checkpoint-\d+$")
WEIGHT_INDEX = ("model/model.safetensors.index.json", "adapter/adapter_config.json")


def is_complete(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` has every file a resume reads (the weights' shards are checked
    against their index when loaded)."""
    return (all((checkpoint / name).is_file() for name in (STATE_FILE, "optimizer.pt", "scheduler.pt"))
            and any((checkpoint / name).is_file() for name in WEIGHT_INDEX))


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := _NAME.match(p.name)) and is_complete(p)]
    return [p for _, p in sorted(found)]


def remove_leftovers(output_dir: Path) -> None:
    """Delete ``.tmp-checkpoint-N`` and ``.deleting-checkpoint-N`` folders of a killed run."""
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            if _LEFTOVER.match(path.name):
                shutil.rmtree(path, ignore_errors=True)


def delete_checkpoint(checkpoint: Path) -> None:
    """Rename ``checkpoint`` out of the checkpoints' names, then delete it."""
    doomed = checkpoint.with_name(f".deleting-{checkpoint.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(checkpoint, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    info: DistInfo,
    write_weights: Any,
    optimizer_state: dict[str, Any] | None,
    scheduler_state: dict[str, Any],
    trainer_state: dict[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically; every process calls this (collectively).

    ``write_weights(folder)`` writes the weights (only the main process's call writes).
    ``optimizer_state`` is the full state on the main process (ignored elsewhere).
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".tmp-checkpoint-{step}"
    if info.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(output_dir)
        tmp.mkdir()
    barrier(info)
    torch.save(rng_state(), tmp / f"rng_state_{info.rank}.pt")
    if info.is_main:
        write_weights(tmp)
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler_state, tmp / "scheduler.pt")
        (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "world_size": info.world}, indent=2))
    barrier(info)
    if info.is_main:
        replace_directory(tmp, final)
        if keep_last is not None and keep_last > 0:
            for old in checkpoints(output_dir)[:-keep_last]:
                delete_checkpoint(old)
    barrier(info)
    return final


def resolve_resume(resume_from: str | Path | bool, output_dir: str | Path | None) -> Path:
    """``True`` → the latest checkpoint in ``output_dir``; a path → that checkpoint (or the latest
    inside it when it is an output folder)."""
    if resume_from is True:
        if output_dir is None:
            raise ValueError("resume needs an output_dir to look for checkpoints in")
        found = latest_checkpoint(output_dir)
        if found is None:
            raise FileNotFoundError(f"no checkpoint-<step> folder with {STATE_FILE} in {output_dir}")
        return found
    path = Path(resume_from)  # type: ignore[arg-type]
    if (path / STATE_FILE).is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint (no {STATE_FILE}) nor a folder with one")
    return found


def read_state(checkpoint: Path, info: DistInfo) -> dict[str, Any]:
    """``trainer_state.json``, this process's RNG state and the optimiser/scheduler states (every
    process reads the folder: checkpoints live on storage all processes see)."""
    state = read_json(checkpoint / STATE_FILE)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(f"{checkpoint / STATE_FILE}: expected a mapping with an integer 'step'")
    rng_file = checkpoint / f"rng_state_{info.rank}.pt"
    state["rng"] = load_tensors_file(rng_file) if rng_file.is_file() else None
    state["optimizer"] = load_tensors_file(checkpoint / "optimizer.pt")
    state["scheduler"] = load_tensors_file(checkpoint / "scheduler.pt")
    return state


def load_tensors_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only; a file that holds
    anything else (which could run code when unpickled) is refused with its name."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path}: refused to load; it holds objects other than tensors and plain data, and "
            f"vlmkit only unpickles with weights_only=True ({first})"
        ) from None
    except (EOFError, RuntimeError) as err:
        raise ValueError(f"{path} is truncated or not a torch.save file ({err})") from None
