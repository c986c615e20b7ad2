"""Images to pixel tensors for the LR and HR encoders, the way Mini-Gemini prepares them.

One image is made square (padded with the mean colour, squashed, or centre-cropped), resized
with bicubic to the processor's input size (the HR size, or the LR size times the HD grid for a
single encoder) and normalised with CLIP's statistics. The LR input is a bilinear resize of that
normalised tensor; with MGM-HD it is cut into views (:mod:`vlmkit.data.views`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlmkit.config import ASPECT_RATIOS
from vlmkit.data.views import num_views, resize_view, split_views

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ASPECTS = ASPECT_RATIOS


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, keeping the brightness of high-bit-depth images.

    PIL's own ``convert("RGB")`` clips 16- and 32-bit values to 255, so a 16-bit PNG turns white.
    Here integer modes (``I``, ``I;16*``: 16-bit PNG/TIFF) are scaled from 0-65535 to 0-255; float
    mode ``F`` is scaled from 0-1 when its values lie there, else read as 0-255. Values outside
    those ranges (negative, or above 65535 / 255) raise ``ValueError`` naming the range found.
    Other modes convert as PIL converts them (alpha is dropped, as Mini-Gemini does).
    """
    if image.mode in ("RGB",):
        return image
    if image.mode == "F" or image.mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if image.mode == "F" and low >= 0 and high <= 1:
            scale = 255.0
        elif image.mode == "F" and low >= 0 and high <= 255:
            scale = 1.0
        elif image.mode != "F" and low >= 0 and high <= 65535:
            scale = 255.0 / 65535.0
        else:
            raise ValueError(
                f"a mode-{image.mode} image with values from {low:g} to {high:g}: expected "
                + ("0-1 or 0-255" if image.mode == "F" else "0-65535 (16-bit)")
            )
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    for via in (None, "RGBA", "LA"):  # e.g. "La" converts only through "LA"
        try:
            return (image if via is None else image.convert(via)).convert("RGB")
        except ValueError as err:
            problem = err
    raise ValueError(f"images of mode {image.mode!r} cannot be read ({problem})")


def load_image(path: str | Path) -> Image.Image:
    """The image file at ``path`` as an RGB PIL image (:func:`to_rgb`), read in full (the file
    is closed).

    Raises what PIL raises: ``FileNotFoundError``, ``PIL.UnidentifiedImageError`` (an ``OSError``)
    for an unreadable format, ``PIL.Image.DecompressionBombError``; callers decide how to report.
    """
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


class ImageProcessor:
    """PIL images or pixel tensors to ``{"lr", "hr", "num_views"}`` for a built model.

    ``lr_size``: the LR encoder's input (336 for CLIP ViT-L/14-336). ``hr_size``: the HR
    encoder's input (768, or 1536 for HD), or None for a single-encoder model. ``image_grid`` and
    ``image_global``: MGM-HD views (grid 2 with a global view gives 5 LR views per image).
    ``aspect``: ``"pad"`` (to square with the mean colour, MGM finetuning), ``"resize"`` (squash)
    or ``"crop"`` (shortest side to size, centre crop).
    """

    def __init__(
        self,
        lr_size: int,
        hr_size: int | None = None,
        *,
        image_grid: int = 1,
        image_global: bool = False,
        aspect: str = "pad",
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
    ) -> None:
        if lr_size < 1 or (hr_size is not None and hr_size < 1):
            raise ValueError(
                f"image sizes must be positive, got lr_size={lr_size}, hr_size={hr_size}"
            )
        if image_grid < 1:
            raise ValueError(f"image_grid must be >= 1, got {image_grid}")
        if aspect not in ASPECTS:
            raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
        self.lr_size = lr_size
        self.hr_size = hr_size
        self.image_grid = image_grid
        self.image_global = image_global
        self.aspect = aspect
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @property
    def num_views(self) -> int:
        """LR views per image."""
        return num_views(self.image_grid, self.image_global)

    @property
    def input_size(self) -> int:
        """Side of the square every image is prepared at: ``hr_size``, else ``lr_size * grid``."""
        return self.hr_size if self.hr_size is not None else self.lr_size * self.image_grid

    def __call__(self, images: Any) -> dict[str, Any]:
        """Pixels for the encoders.

        ``images``: a PIL image, a list of them, or a float tensor ``(B, 3, S, S)`` (or
        ``(3, S, S)``) already prepared and normalised at ``S = input_size``. Returns
        ``{"lr": (B*V, 3, lr_size, lr_size), "hr": (B, 3, hr_size, hr_size) or None,
        "num_views": V}``, the ``V`` views of one image consecutive.
        """
        base = self._base(images)
        lr = resize_view(base, self.lr_size * self.image_grid)
        return {
            "lr": split_views(lr, self.image_grid, self.image_global),
            "hr": base if self.hr_size is not None else None,
            "num_views": self.num_views,
        }

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """One PIL image as a normalised tensor ``(3, S, S)`` at ``S = input_size``."""
        size = self.input_size
        image = to_rgb(image)
        if self.aspect == "pad":
            image = _pad_to_square(image, tuple(int(m * 255) for m in self.mean))
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        elif self.aspect == "resize":
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        else:
            image = _resize_and_centre_crop(image, size)
        x = torch.from_numpy((np.asarray(image, dtype=np.float64) / 255.0).astype(np.float32))
        x = x.permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return ((x - mean) / std).contiguous()

    def _base(self, images: Any) -> torch.Tensor:
        """All images at the input size: ``(B, 3, S, S)``."""
        if isinstance(images, torch.Tensor):
            return self._check_tensor(images)
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("no images given")
        prepared = []
        for item in items:
            if isinstance(item, Image.Image):
                prepared.append(self.pixels(item)[None])
            elif isinstance(item, torch.Tensor):
                prepared.append(self._check_tensor(item))
            else:
                raise TypeError(
                    f"expected a PIL image or a pixel tensor, got {type(item).__module__}."
                    f"{type(item).__qualname__}"
                )
        return torch.cat([p.to(prepared[0]) for p in prepared], dim=0)

    def _check_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` or ``(3, S, S)`` float pixels as ``(B, 3, S, S)``."""
        size = self.input_size
        batched = x[None] if x.dim() == 3 else x
        if batched.dim() != 4 or tuple(batched.shape[1:]) != (3, size, size):
            raise ValueError(
                f"expected a pixel tensor of shape (B, 3, {size}, {size}) or (3, {size}, {size}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"expected a float pixel tensor (already normalised), got {x.dtype}")
        return batched

def _within_pixel_limit(image: Image.Image, pixels: int) -> Image.Image:
    """``image`` scaled down (bicubic, aspect kept) when an intermediate of ``pixels`` pixels made
    from it would exceed PIL's decompression-bomb limit (e.g. padding a 1 x 50,000 strip to a
    square); unchanged otherwise, so ordinary images are processed exactly as Mini-Gemini does."""
    limit = Image.MAX_IMAGE_PIXELS
    if not limit or pixels <= limit:
        return image
    scale = math.sqrt(limit / pixels)
    w, h = image.size
    return image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BICUBIC)


def _pad_to_square(image: Image.Image, colour: tuple[int, ...]) -> Image.Image:
    """The image centred on a square canvas of ``colour`` (offset rounded down, as MGM does)."""
    w, h = image.size
    if w == h:
        return image
    image = _within_pixel_limit(image, max(w, h) ** 2)
    w, h = image.size
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def _resize_and_centre_crop(image: Image.Image, size: int) -> Image.Image:
    """Shortest side to ``size`` (bicubic), then the centre ``size x size`` (CLIP's processor)."""
    w, h = image.size
    if size * size * max(w, h) > (Image.MAX_IMAGE_PIXELS or 0) * min(w, h):
        short = min(w, h)  # the resized strip would be huge: cut the centre square first
        left, top = (w - short) // 2, (h - short) // 2
        image = image.crop((left, top, left + short, top + short))
        w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))
