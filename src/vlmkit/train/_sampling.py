"""The order samples are trained in: one global batch per optimiser step, split over processes.

The plan is a pure function of ``(seed, epoch, step)``, so resuming needs only the step, and one
process with the global batch sees exactly the samples that N processes see together. Global batch
``k`` of an epoch is ``order[k*G:(k+1)*G]``; micro-batch ``a`` of process ``r`` is its slice
``[(a*world + r)*B, (a*world + r + 1)*B)``. With length grouping, each global batch is sorted by
length (longest first) so that a micro-batch holds samples of similar length (LLaVA's idea).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

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


class _PlanSampler(torch.utils.data.Sampler):
    """The plan's micro-batches of one process, steps ``start`` to ``stop``, as a batch sampler."""

    def __init__(self, plan: GlobalBatches, rank: int, start: int, stop: int) -> None:
        self.plan, self.rank, self.start, self.stop = plan, rank, start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield from self.plan.micro_batches(step, self.rank)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.plan.accum


class _Fetch(torch.utils.data.Dataset):
    """``dataset[i]`` with the reason when the dataset skipped it (workers hold their own copy
    of the dataset, so the reason travels back with the batch)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        item = self.dataset[index]
        skipped = getattr(self.dataset, "skipped", {})
        return item, (skipped.get(index) if item is None and isinstance(skipped, dict) else None)


class _CollateAndReport:
    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, fetched: list[tuple[Any, Any]]) -> tuple[Any, list[Any]]:
        return self.collator([item for item, _ in fetched]), [s for _, s in fetched if s is not None]


def micro_batch_loader(dataset: Any, collator: Any, plan: GlobalBatches, *, rank: int, start: int,
                       stop: int, num_workers: int = 0, pin_memory: bool = False) -> Iterator[Any]:
    """Collated micro-batches (``None`` when all samples were skipped) of steps ``start..stop``,
    in plan order, loaded by ``num_workers`` worker processes (0: in this process). Samples the
    workers skipped are recorded in ``dataset.skipped`` here too."""
    loader = torch.utils.data.DataLoader(
        _Fetch(dataset), batch_sampler=_PlanSampler(plan, rank, start, stop),
        collate_fn=_CollateAndReport(collator), num_workers=num_workers, pin_memory=pin_memory)
    skipped = getattr(dataset, "skipped", None)
    for batch, reports in loader:
        if isinstance(skipped, dict):
            for report in reports:
                skipped.setdefault(report.index, report)
        yield batch
