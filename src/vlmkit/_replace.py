"""Replacing a directory so that a crash or a second writer never loses the complete copy.

A writer builds its new folder under a temporary sibling ``.NAME.tmp-<pid>@<host>-<random>``
(:func:`temporary_sibling`), then :func:`replace_directory` swaps it in: the old ``NAME`` is renamed
to the writer's own ``.NAME.old-<pid>@<host>-<random>``, the new folder is renamed to ``NAME``, and the old
copy is deleted. Renames within one file system are atomic, so at every instant a complete copy
exists under ``NAME`` or under a ``.NAME.old-*`` name. If the process dies between the two renames,
:func:`recover_directory` (called by every load and save of ``NAME``) renames the newest
``.NAME.old-*`` back; it also deletes temporary siblings and old copies whose writer process is
gone (a writer on another host, as on shared storage, is taken to be alive). Two writers never share a temporary or old name; when one writer's rename finds another's
folder already in place, it moves that aside too and tries again, so the last writer wins.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import socket
import uuid
from pathlib import Path

_ATTEMPTS = 100


def _writer() -> str:
    """This process as it appears in folder names: ``<pid>@<host>`` (host letters and digits)."""
    host = "".join(c for c in socket.gethostname() if c.isalnum()) or "host"
    return f"{os.getpid()}@{host}"


def temporary_sibling(target: Path) -> Path:
    """A new empty folder beside ``target``, named for this process."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{_writer()}-", dir=target.parent))


def _writer_alive(writer: str | None) -> bool:
    """Whether the process named ``<pid>@<host>`` (or a bare ``<pid>``) may still be running."""
    if writer is None:
        return False
    pid_text, _, host = writer.partition("@")
    if not pid_text.isdigit():
        return False
    if host and host != _writer().partition("@")[2]:
        return True  # another machine's process: cannot tell, so keep its folders
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _writer_of(name: str, prefixes: tuple[str, ...]) -> str | None:
    """The ``<pid>@<host>`` in ``<prefix><pid>@<host>-<random>``; None for other names (e.g.
    legacy ``.NAME.old``)."""
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix):].split("-", 1)[0]
    return None


def _siblings(target: Path, kind: str) -> list[Path]:
    prefix = f".{target.name}.{kind}"
    if not target.parent.is_dir():
        return []
    return [p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]


def recover_directory(target: str | Path) -> None:
    """Restore ``target`` from a leftover old copy when a replacement was cut short, and delete
    temporary folders and old copies left by writers that no longer run."""
    target = Path(target)
    old_prefix, tmp_prefix = f".{target.name}.old-", f".{target.name}.tmp-"
    olds = _siblings(target, "old")
    if not target.exists() and olds:
        for old in sorted(olds, key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                os.rename(old, target)
                break
            except FileNotFoundError:  # another process restored or deleted it first
                continue
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    break  # a writer's new copy arrived meanwhile
                raise
    for path in _siblings(target, "old") + _siblings(target, "tmp"):
        alive = _writer_alive(_writer_of(path.name, (old_prefix, tmp_prefix)))
        is_old = path.name.startswith(f".{target.name}.old")
        if not alive and (target.exists() or not is_old):
            shutil.rmtree(path, ignore_errors=True)


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished folder ``source`` to ``target`` by renames on one file system; an
    existing ``target`` is moved aside under a name of this writer's own and deleted only once
    ``source`` is in place."""
    source, target = Path(source), Path(target)
    backups: list[Path] = []
    for _ in range(_ATTEMPTS):
        try:
            os.rename(source, target)
            break
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        backup = target.with_name(f".{target.name}.old-{_writer()}-{uuid.uuid4().hex[:12]}")
        try:
            os.rename(target, backup)
            backups.append(backup)
        except FileNotFoundError:  # another writer moved it away first: try again
            continue
    else:
        raise OSError(f"could not move {source} to {target}: other writers kept replacing it")
    for backup in backups:
        shutil.rmtree(backup, ignore_errors=True)
