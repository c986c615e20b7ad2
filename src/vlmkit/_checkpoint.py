"""The files of a saved :class:`~vlmkit.model.VisionLanguageModel` directory: writing and reading them.

Layout: ``config.json`` (the resolved vlmkit config), ``tokenizer/`` (the LLM's tokenizer) and
``model.safetensors`` or ``model-0000k-of-0000n.safetensors`` shards with
``model.safetensors.index.json``. Tensors that share storage (tied embeddings) are written once and
restored from their alias, listed in the index metadata. Components that can describe their
architecture without external files (``standalone_kwargs()``) are saved that way, so loading needs
neither the hub nor the original weight files.

Loading trusts nothing in the directory: ``trust_remote_code`` in its ``config.json`` is ignored
(only the caller's argument turns it on), every shard the index names must lie inside the
directory, and each shard's SHA-256 (recorded in the index metadata when saved) is checked before
its tensors are used. Saving and loading recover from a replacement cut short by a crash
(:mod:`vlmkit._replace`).
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vlmkit._files import inside, read_json, sha256_file
from vlmkit._replace import recover_directory, replace_directory, temporary_sibling
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
    recover_directory(directory)
    tmp = temporary_sibling(directory)
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
        checksums = {}
        for filename, names in split.filename_to_tensors.items():
            save_file({n: state[n] for n in names}, str(tmp / filename), metadata={"format": "pt"})
            checksums[filename] = sha256_file(tmp / filename)
        index = {"metadata": {"aliases": aliases, "sha256": checksums},
                 "weight_map": split.tensor_to_filename}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2))
        replace_directory(tmp, directory)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "the previous copy is unchanged" if directory.exists() else "nothing was written"
            raise OSError(err.errno, f"no space left to save the model to {directory}; {kept}") from err
        raise


def read_config(directory: Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The saved config, made safe to build: every slot's ``trust_remote_code`` is replaced by the
    caller's ``trust_remote_code`` (what the file says is ignored) and the tokenizer folder is
    resolved inside ``directory``."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a vlmkit model directory: {CONFIG_NAME} is missing")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"{path} has no 'config' mapping; is it a vlmkit model directory?")
    config = data["config"]
    for slot, spec in config.items():
        if isinstance(spec, dict) and "trust_remote_code" in spec:
            spec["trust_remote_code"] = bool(trust_remote_code)
    llm = config.get("llm")  # a slot may also be just a component name
    if isinstance(llm, dict) and llm.get("tokenizer") == TOKENIZER_DIR:
        llm["tokenizer"] = str(inside(directory, TOKENIZER_DIR, source=path))
    return config


def _read_index(directory: Path) -> tuple[Path, dict[str, Any]]:
    index_path = directory / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"{directory}: {INDEX_NAME} is missing")
    index = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path}: expected a 'weight_map' mapping of tensor names to files")
    bad = [name for name in weight_map.values() if not isinstance(name, str)]
    if bad:
        raise ValueError(f"{index_path}: weight_map values must be file names, got {bad[0]!r}")
    metadata = index.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{index_path}: 'metadata' must be a mapping, got {type(metadata).__name__}")
    for key in ("aliases", "sha256"):
        value = metadata.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"{index_path}: metadata.{key} must map names to strings")
        metadata[key] = value
    index["metadata"] = metadata
    return index_path, index


def load_state(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a saved model, aliases restored. Shards must lie inside ``directory`` and
    match the SHA-256 recorded for them at save time (directories saved without checksums are
    read unchecked)."""
    directory = Path(directory)
    recover_directory(directory)
    index_path, index = _read_index(directory)
    checksums = index["metadata"]["sha256"]
    state: dict[str, torch.Tensor] = {}
    for filename in sorted(set(index["weight_map"].values()), key=str):
        path = inside(directory, filename, source=index_path)
        if not path.is_file():
            raise FileNotFoundError(f"{index_path} names shard {filename!r}, which is missing")
        expected = checksums.get(filename)
        if expected is not None and sha256_file(path) != expected:
            raise ValueError(
                f"{path} is corrupted: its SHA-256 differs from the one recorded in {index_path} "
                "when the model was saved"
            )
        try:
            state.update(load_file(str(path)))
        except SafetensorError as err:
            raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
    for alias, name in index["metadata"]["aliases"].items():
        if name not in state:
            raise ValueError(f"{index_path}: alias {alias!r} points to {name!r}, which no shard holds")
        state[alias] = state[name]
    return state

