"""Splicing visual tokens at placeholders: positions, labels, padding sides, count checks."""

from __future__ import annotations

import pytest
import torch

from vlmkit._splice import splice_visual_tokens
from vlmkit.data.conversation import IGNORE_INDEX, IMAGE_TOKEN_INDEX

P = IMAGE_TOKEN_INDEX


@pytest.fixture
def embed():
    table = torch.nn.Embedding(50, 4)
    return table


def test_single_image_positions_and_labels(embed):
    ids = torch.tensor([[5, P, 7, 8]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 7, 8]])
    visual = torch.randn(1, 3, 4)
    out = splice_visual_tokens(ids, None, labels, visual, embed=embed, num_visual_tokens=3)
    emb = out["inputs_embeds"][0]
    assert emb.shape == (6, 4)
    torch.testing.assert_close(emb[0], embed.weight[5])
    torch.testing.assert_close(emb[1:4], visual[0])
    torch.testing.assert_close(emb[4:], embed.weight[[7, 8]])
    assert out["labels"][0].tolist() == [IGNORE_INDEX] * 4 + [7, 8]
    assert out["attention_mask"].tolist() == [[1] * 6]


def test_batch_with_two_images_text_only_row_and_padding(embed):
    pad = 0
    ids = torch.tensor([[P, 3, P, 4], [9, 9, pad, pad]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    visual = torch.randn(2, 2, 4)
    for side in ("left", "right"):
        out = splice_visual_tokens(ids, mask, None, visual, embed=embed, num_visual_tokens=2, padding_side=side)
        assert out["inputs_embeds"].shape == (2, 6, 4)
        row0 = out["inputs_embeds"][0]
        torch.testing.assert_close(row0[0:2], visual[0])
        torch.testing.assert_close(row0[3:5], visual[1])
        expected_mask = [0, 0, 0, 0, 1, 1] if side == "left" else [1, 1, 0, 0, 0, 0]
        assert out["attention_mask"][1].tolist() == expected_mask
        real = out["inputs_embeds"][1][torch.tensor(expected_mask).bool()]
        torch.testing.assert_close(real, embed.weight[[9, 9]])


def test_count_mismatches_name_both_numbers(embed):
    ids = torch.tensor([[P, 3, P]])
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) but 1 image\(s\)"):
        splice_visual_tokens(ids, None, None, torch.randn(1, 2, 4), embed=embed, num_visual_tokens=2)
    with pytest.raises(ValueError, match="should give 5 visual tokens, got 2"):
        splice_visual_tokens(ids, None, None, torch.randn(2, 2, 4), embed=embed, num_visual_tokens=5)
