"""The order samples are trained in: one global batch per optimiser step, split over processes.

The plan is a pure function of ``(seed, epoch, step)``, so resuming needs only the step, and one
process with the global batch sees exactly the samples that N processes see together. Global batch
``k`` of an epoch is ``order[k*G:(k+1)*G]``; micro-batch ``a`` of process ``r`` is its slice
``[(a*world + r)*B, (a*world + r + 1)*B)``. With length grouping, each global batch is sorted by
length (longest first) so that a micro-batch holds samples of similar length (LLaVA's idea).
"""

from __future__ import annotations

from typing import Sequence

import torch


class GlobalBatches:
    """Sample indices per optimiser step for a dataset of ``size`` samples (last partial batch dropped).

    ``per_device``: ``B``; ``accum``: micro-batches per step; ``world``: processes. ``lengths``: one
    estimate per sample to group by length, or None for a plain shuffle.
    """

    def __init__(self, size: int, *, per_device: int, accum: int, world: int, seed: int,
                 lengths: Sequence[int] | None = None) -> None:
        self.size, self.per_device, self.accum, self.world, self.seed = size, per_device, accum, world, seed
        self.global_batch = per_device * accum * world
        if size < self.global_batch:
            raise ValueError(
                f"the dataset has {size} samples, fewer than one global batch of {self.global_batch} "
                f"({per_device} per device x {accum} accumulation steps x {world} processes)")
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"got {len(lengths)} lengths for {size} samples")
        self.lengths = list(lengths) if lengths is not None else None
        self.steps_per_epoch = size // self.global_batch
        self._cache: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        """The epoch's sample order (a seeded permutation, length-grouped per global batch)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(self.size, generator=generator).tolist()
        if self.lengths is not None:
            g, lengths = self.global_batch, self.lengths
            perm = [i for k in range(0, len(perm), g)
                    for i in sorted(perm[k:k + g], key=lambda i: -lengths[i])]
        self._cache = (epoch, perm)
        return perm

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The ``accum`` micro-batches (lists of ``B`` indices) of process ``rank`` at ``step``."""
        k = step % self.steps_per_epoch
        batch = self.order(self.epoch(step))[k * self.global_batch:(k + 1) * self.global_batch]
        b = self.per_device
        return [batch[(a * self.world + rank) * b:(a * self.world + rank + 1) * b]
                for a in range(self.accum)]

    def state(self, step: int) -> dict[str, int | bool]:
        """What a checkpoint records to check that a resumed run continues the same plan."""
        return {"seed": self.seed, "size": self.size, "global_batch": self.global_batch,
                "epoch": self.epoch(step), "step_in_epoch": step % self.steps_per_epoch,
                "group_by_length": self.lengths is not None}
