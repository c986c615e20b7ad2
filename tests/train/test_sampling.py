"""The data plan: every process count splits the same global batches; epochs are permutations;
length grouping sorts within a global batch."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmkit.train._sampling import GlobalBatches


@settings(max_examples=40, deadline=None)
@given(per_device=st.integers(1, 3), accum=st.integers(1, 3), world=st.integers(1, 3),
       extra=st.integers(0, 20), seed=st.integers(0, 5), step=st.integers(0, 12),
       grouped=st.booleans())
def test_split_is_a_partition_of_the_global_batch(per_device, accum, world, extra, seed, step, grouped):
    global_batch = per_device * accum * world
    size = global_batch + extra
    lengths = [(i * 7) % 11 for i in range(size)] if grouped else None
    plan = GlobalBatches(size, per_device=per_device, accum=accum, world=world, seed=seed,
                         lengths=lengths)
    parts = [plan.micro_batches(step, r) for r in range(world)]
    assert all(len(m) == accum and all(len(b) == per_device for b in m) for m in parts)
    flat = sorted(i for m in parts for b in m for i in b)
    # The same samples as one process taking the whole global batch at once.
    single = GlobalBatches(size, per_device=global_batch, accum=1, world=1, seed=seed, lengths=lengths)
    assert flat == sorted(single.micro_batches(step, 0)[0])
    assert len(set(flat)) == global_batch


def test_epochs_are_permutations_and_differ():
    plan = GlobalBatches(10, per_device=2, accum=1, world=1, seed=3)
    assert plan.steps_per_epoch == 5
    epoch0 = [i for s in range(5) for i in plan.micro_batches(s, 0)[0]]
    epoch1 = [i for s in range(5, 10) for i in plan.micro_batches(s, 0)[0]]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    again = GlobalBatches(10, per_device=2, accum=1, world=1, seed=3)
    assert again.micro_batches(7, 0) == plan.micro_batches(7, 0)


def test_length_grouping_sorts_within_global_batch():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4]
    plan = GlobalBatches(8, per_device=2, accum=2, world=1, seed=0, lengths=lengths)
    for step in range(2):
        batch = [i for b in plan.micro_batches(step, 0) for i in b]
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)


def test_errors():
    with pytest.raises(ValueError, match="3 samples, fewer than one global batch of 4"):
        GlobalBatches(3, per_device=2, accum=1, world=2, seed=0)
    with pytest.raises(ValueError, match="got 2 lengths for 4 samples"):
        GlobalBatches(4, per_device=1, accum=1, world=1, seed=0, lengths=[1, 2])
