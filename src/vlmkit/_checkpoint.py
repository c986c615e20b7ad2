"""The files of a saved :class:`~vlmkit.model.VisionLanguageModel` directory: writing and reading them.

Layout: ``config.json`` (the resolved vlmkit config), ``tokenizer/`` (the LLM's tokenizer) and
``model.safetensors`` or ``model-0000k-of-0000n.safetensors`` shards with
``model.safetensors.index.json``. Tensors that share storage (tied embeddings) are written once and
restored from their alias, listed in the index metadata. Components that can describe their
architecture without external files (``standalone_kwargs()``) are saved that way, so loading needs
neither the hub nor the original weight files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import load_file, save_file

from vlmkit._version import __version__
from vlmkit.config import SLOTS

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_DIR = "tokenizer"


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors that alias an earlier one; return the kept tensors and ``{alias: kept name}``."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            kept[name] = tensor.detach().contiguous().cpu()
    return kept, aliases


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished folder ``source`` to ``target`` by renames on one file system; an
    existing ``target`` is moved aside first and deleted only once ``source`` is in place."""
    if target.exists():
        backup = target.with_name(f".{target.name}.old")
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(target, backup)
        os.replace(source, target)
        shutil.rmtree(backup)
    else:
        os.replace(source, target)


def save_model(
    model: Any,
    directory: Path,
    *,
    max_shard_size: int | str = "2GB",
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``model`` into ``directory`` atomically (a temporary sibling, then a rename).

    ``state_dict``: the weights to write instead of ``model.state_dict()`` (e.g. the full
    weights gathered from a sharded model)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        config = model.config.to_dict()
        for slot in SLOTS:
            component = getattr(model, slot, None)
            standalone = getattr(component, "standalone_kwargs", None)
            if slot in config and callable(standalone):
                config[slot].update(standalone())
        if hasattr(model.llm, "save_tokenizer"):
            model.llm.save_tokenizer(tmp / TOKENIZER_DIR)
            config["llm"]["tokenizer"] = TOKENIZER_DIR
        (tmp / CONFIG_NAME).write_text(
            json.dumps({"vlmkit_version": __version__, "config": config}, indent=2)
        )
        state, aliases = _dedupe(model.state_dict() if state_dict is None else state_dict)
        split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
        for filename, names in split.filename_to_tensors.items():
            save_file({n: state[n] for n in names}, str(tmp / filename), metadata={"format": "pt"})
        index = {"metadata": {"aliases": aliases}, "weight_map": split.tensor_to_filename}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2))
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a vlmkit model directory: {CONFIG_NAME} is missing")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"{path} has no 'config' mapping; is it a vlmkit model directory?")
    config = data["config"]
    llm = config.get("llm")  # a slot may also be just a component name
    if isinstance(llm, dict) and llm.get("tokenizer") == TOKENIZER_DIR:
        llm["tokenizer"] = str(Path(directory) / TOKENIZER_DIR)
    return config


def load_state(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a saved model, aliases restored."""
    directory = Path(directory)
    index_path = directory / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"{directory}: {INDEX_NAME} is missing")
    index = json.loads(index_path.read_text())
    state: dict[str, torch.Tensor] = {}
    for filename in sorted(set(index["weight_map"].values())):
        state.update(load_file(str(directory / filename)))
    for alias, name in index.get("metadata", {}).get("aliases", {}).items():
        state[alias] = state[name]
    return state

