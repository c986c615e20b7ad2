"""Collation: right padding with the pad id and IGNORE_INDEX, images concatenated in order."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmkit.data.collate import Collator, merge_pixels
from vlmkit.data.conversation import IGNORE_INDEX


def _item(n, images=0, tag=0):
    pixels = None
    if images:
        pixels = {"lr": torch.full((images, 3, 4, 4), float(tag)),
                  "hr": torch.full((images, 3, 8, 8), float(tag)), "num_views": 1}
    return {"input_ids": torch.arange(1, n + 1), "labels": torch.arange(1, n + 1) * 10,
            "pixels": pixels, "id": tag}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(0, 2)), min_size=1, max_size=5))
def test_padding_and_masks(spec):
    items = [_item(n, k, tag=i) for i, (n, k) in enumerate(spec)]
    batch = Collator(pad_token_id=3)(items)
    length = max(n for n, _ in spec)
    assert batch["input_ids"].shape == batch["labels"].shape == (len(spec), length)
    for b, (n, _) in enumerate(spec):
        assert torch.equal(batch["input_ids"][b, :n], torch.arange(1, n + 1))
        assert (batch["input_ids"][b, n:] == 3).all()
        assert (batch["labels"][b, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (length - n)
    tags = [i for i, (_, k) in enumerate(spec) for _ in range(k)]
    if tags:
        assert batch["images"]["hr"][:, 0, 0, 0].tolist() == [float(t) for t in tags]
        assert batch["images"]["lr"].shape[0] == len(tags)
    else:
        assert batch["images"] is None


def test_skipped_items_are_dropped():
    collate = Collator(pad_token_id=0)
    batch = collate([None, _item(3), None])
    assert batch["input_ids"].shape == (1, 3)
    assert collate([None, None]) is None


def test_errors():
    with pytest.raises(ValueError, match="pad_token_id"):
        Collator(pad_token_id=None)  # type: ignore[arg-type]
    a, b = _item(2, 1)["pixels"], dict(_item(2, 1)["pixels"], num_views=5)
    with pytest.raises(ValueError, match="different numbers of views"):
        merge_pixels([a, b])
