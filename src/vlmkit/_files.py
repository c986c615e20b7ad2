"""Reading the files a model directory names, without trusting them.

Every file name taken from a model directory's own JSON (a ``weight_map`` shard, a tokenizer
folder) must resolve inside that directory: ``..`` segments, absolute paths and symbolic links that
leave it are refused. JSON that does not parse is reported with the file's path. Checksums are
SHA-256 of the whole file, read in 1 MiB blocks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


class UnsafePathError(ValueError):
    """A model directory names a file outside itself."""


def inside(directory: Path, name: Any, *, source: Path) -> Path:
    """``directory / name`` after checking it stays inside ``directory`` (symbolic links resolved).

    ``source``: the file that named ``name``, for the error message."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{source}: expected a file name, got {name!r}")
    if Path(name).is_absolute() or "\\" in name:
        raise UnsafePathError(
            f"{source}: file name {name!r} is absolute; files must be named relative to {directory}"
        )
    root = Path(directory).resolve()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise UnsafePathError(f"{source}: file name {name!r} points outside {directory}")
    return Path(directory) / name


def check_local_source(source: str | None, what: str) -> None:
    """A ``pretrained`` value that can only be a local path (absolute, ``./``, ``../``, ``~`` or
    more than one ``/``) must exist; otherwise ``FileNotFoundError`` names it, instead of the hub
    client's complaint about a malformed repository id."""
    if source is None or not isinstance(source, str):
        return
    local = source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source
    if local and not Path(source).expanduser().exists():
        raise FileNotFoundError(
            f"{what}: pretrained={source!r} does not exist (a local path was expected; a hub id "
            "has the form 'org/name')"
        )


def read_json(path: Path) -> Any:
    """The JSON document at ``path``; a ``ValueError`` naming the file when it does not parse."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
