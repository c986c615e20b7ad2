"""torch.distributed plumbing: the process group from torchrun's environment, DDP and FSDP wrapping.

Nothing here launches processes: run ``torchrun --nproc_per_node N -m vlmkit train ...`` (or
``python -m torch.distributed.run``); the same command runs on one process without it. The backend
is NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("auto", "none", "ddp", "fsdp")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env() -> DistInfo:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...).

    A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) starts no group. Calling it again
    reuses the group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for(info: DistInfo) -> torch.device:
    return torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def wrap(module: nn.Module, strategy: str, info: DistInfo) -> nn.Module:
    """``module`` for data-parallel training: DDP (``"ddp"``, the default under N processes), FSDP
    (``"fsdp"``: ``torch.distributed.fsdp.fully_shard`` on each LLM decoder layer and the whole), or
    unchanged on one process."""
    if strategy not in STRATEGIES:
        raise ValueError(f"distributed strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not info.enabled or strategy == "none":
        return module
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for sub in module.modules():
            if type(sub).__name__.endswith("DecoderLayer") and any(p.requires_grad for p in sub.parameters()):
                fully_shard(sub)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.local_rank] if torch.cuda.is_available() else None
    return DistributedDataParallel(module, device_ids=device_ids)


@contextlib.contextmanager
def no_sync(module: nn.Module, active: bool) -> Iterator[None]:
    """Skip the gradient all-reduce during accumulation micro-steps (DDP and FSDP)."""
    if not active:
        yield
        return
    if hasattr(module, "no_sync"):
        with module.no_sync():
            yield
    elif hasattr(module, "set_requires_gradient_sync"):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        yield


def all_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``value`` over processes (``value`` itself on one process)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
