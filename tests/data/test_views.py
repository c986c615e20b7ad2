"""MGM-HD views: the count, the order (global first, then row-major crops) for pixels and feature
maps, float32 resizing, and the errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmkit.config import VLMConfig
from vlmkit.data.views import num_views, resize_view, split_views


def test_order_global_first_then_row_major_crops():
    b, c, size = 2, 3, 8
    x = torch.arange(b * c * size * size, dtype=torch.float32).reshape(b, c, size, size)
    views = split_views(x, image_grid=2, image_global=True)
    assert views.shape == (b * 5, c, 4, 4)
    for i in range(b):
        whole = F.interpolate(x[i : i + 1], size=(4, 4), mode="bilinear", align_corners=False)
        torch.testing.assert_close(views[i * 5], whole[0], rtol=0, atol=0)
        crops = [x[i, :, :4, :4], x[i, :, :4, 4:], x[i, :, 4:, :4], x[i, :, 4:, 4:]]
        for j, crop in enumerate(crops):
            assert torch.equal(views[i * 5 + 1 + j], crop)


def test_grid_three_with_and_without_global():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    views = split_views(x, image_grid=3, image_global=True)
    assert views.shape == (20, 1, 2, 2)
    for b in range(2):
        for k in range(9):
            r, c = divmod(k, 3)
            assert torch.equal(views[b * 10 + 1 + k], x[b, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2])
    plain = split_views(x, 3, False)
    assert plain.shape == (18, 1, 2, 2)
    assert torch.equal(plain[5], x[0, :, 2:4, 4:6])  # row 1, column 2


def test_rectangular_maps_are_cut_per_axis():
    x = torch.randn(1, 2, 4, 8)
    views = split_views(x, 2, False)
    assert views.shape == (4, 2, 2, 4)
    assert torch.equal(views[1], x[0, :, :2, 4:])


@pytest.mark.parametrize("grid, use_global", [(1, False), (1, True), (2, False), (2, True), (3, True)])
def test_split_gives_as_many_views_as_counted(grid, use_global):
    x = torch.randn(2, 3, 6 * grid, 6 * grid)
    expected = num_views(grid, use_global)
    assert split_views(x, grid, use_global).shape[0] == 2 * expected
    config = VLMConfig.from_dict({"lr_encoder": "a", "projector": "b", "llm": "c",
                                  "image_grid": grid, "image_global": use_global})  # fmt: skip
    assert config.num_views == expected


def test_grid_one_is_the_input_itself():
    x = torch.randn(2, 3, 4, 4)
    assert split_views(x, 1, False) is x
    assert split_views(x, 1, True) is x  # MGM makes no global view without a grid


def test_keeps_dtype_and_resizes_in_float32():
    x = torch.randn(1, 2, 8, 8).to(torch.bfloat16)
    views = split_views(x, 2, True)
    assert views.dtype == torch.bfloat16
    whole = F.interpolate(x.float(), size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.equal(views[0], whole[0].to(torch.bfloat16))
    assert torch.equal(resize_view(x, 4), whole.to(torch.bfloat16))
    assert resize_view(x, 8) is x


@pytest.mark.parametrize(
    "shape, grid, message",
    [
        ((1, 2, 9, 9), 2, "size 9x9 is not divisible by image_grid=2"),
        ((1, 3, 6, 6), 4, "size 6x6 is not divisible by image_grid=4"),
        ((1, 2, 8, 8), 0, "image_grid must be >= 1, got 0"),
        ((2, 8, 8), 2, "expected (B, C, H, W), got shape (2, 8, 8)"),
    ],
)
def test_errors(shape, grid, message):
    with pytest.raises(ValueError) as err:
        split_views(torch.randn(*shape), grid, True)
    assert message in str(err.value)
