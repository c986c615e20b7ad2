"""Mini-Gemini's HD views, in one place: how many views an image has and how a tensor is cut into them.

With ``image_grid = g > 1`` an image is seen as ``g*g`` crops in row-major order, preceded by a
global view (the whole image resized to one crop's size) when ``image_global``. The same cut serves
the LR pixels (:class:`vlmkit.data.processor.ImageProcessor`) and the HR feature maps
(:meth:`vlmkit.model.VisionLanguageModel.encode_images`), so the LR tokens of a view mine the HR
region they were cut from. With ``g = 1`` there is one view, the image itself (MGM makes no global
view without a grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def num_views(image_grid: int, image_global: bool) -> int:
    """Views per image: ``image_grid**2`` crops, plus a global view when ``image_grid > 1``."""
    return image_grid * image_grid + int(image_global and image_grid > 1)


def resize_view(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize ``(B, C, H, W) -> (B, C, size, size)`` as MGM does it (``align_corners=False``,
    no antialias, computed in float32, cast back); ``x`` itself when it already has that size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False).to(x.dtype)


def split_views(x: torch.Tensor, image_grid: int, image_global: bool) -> torch.Tensor:
    """The views of each image: ``(B, C, H, W) -> (B*V, C, H/g, W/g)``, ``V = num_views(g, global)``.

    ``x``: pixels or a feature map, ``H`` and ``W`` divisible by ``g = image_grid``. Per image: the
    global view first when ``image_global`` (the whole of ``x`` bilinearly resized to ``H/g x W/g``,
    ``align_corners=False``, in float32, cast back), then the ``g*g`` crops in row-major order;
    views of one image are consecutive. With ``g = 1``, ``x`` is returned unchanged.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    if image_grid < 1:
        raise ValueError(f"image_grid must be >= 1, got {image_grid}")
    b, c, h, w = x.shape
    if h % image_grid or w % image_grid:
        raise ValueError(f"size {h}x{w} is not divisible by image_grid={image_grid}")
    if image_grid == 1:
        return x
    ch, cw = h // image_grid, w // image_grid
    crops = x.reshape(b, c, image_grid, ch, image_grid, cw).permute(0, 2, 4, 1, 3, 5)
    views = crops.reshape(b, image_grid * image_grid, c, ch, cw)
    if image_global:
        whole = F.interpolate(x.float(), size=(ch, cw), mode="bilinear", align_corners=False)
        views = torch.cat([whole.to(x.dtype).unsqueeze(1), views], dim=1)
    return views.reshape(-1, c, ch, cw)
