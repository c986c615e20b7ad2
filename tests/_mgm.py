"""Mini-Gemini's computation restated from the paper and its public code (docs/architecture.md) for equivalence tests, without vlmkit.

Everything here uses torch, transformers and timm modules directly and follows MGM's own order of
operations (``encode_images`` / ``unified_resampler``), so a vlmkit model built from the same
weights must give the same visual tokens and logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_TOKEN_INDEX = -200


def clip_patch_features(clip_vision: nn.Module, pixels: torch.Tensor, layer: int = -2):
    """``hidden_states[layer]`` of an HF ``CLIPVisionModel``, CLS dropped: ``(B, N, C)``."""
    out = clip_vision(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]


def convnext_fused(stem: nn.Module, stages: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Stem, all stages; stages 1.. bilinearly resized (fp32) to stage 0's size; concatenated."""
    x = stem(pixels)
    maps = []
    for stage in stages:
        x = stage(x)
        maps.append(x)
    size = maps[0].shape[-2:]
    resized = [maps[0]] + [
        F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False).to(m.dtype)
        for m in maps[1:]
    ]
    return torch.cat(resized, dim=1)


def mine(lr: torch.Tensor, hr: torch.Tensor, query: nn.Module, key: nn.Module, value: nn.Module):
    """MGM's ``unified_resampler`` plus the residual: ``lr (B, N, C)``, ``hr (B, C_aux, H, W)``."""
    side = int(math.isqrt(lr.shape[1]))
    window = hr.shape[-1] // side
    windows = hr.permute(0, 2, 3, 1)
    windows = windows.reshape(len(windows), side, window, side, window, windows.shape[-1])
    windows = windows.permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(len(windows), side * side, window * window, windows.shape[-1])
    q = query(lr)
    k = key(windows)
    v = value(windows)
    att = q[:, :, None] @ (k.transpose(-1, -2) / (k.shape[-1] ** 0.5))
    att = att.nan_to_num()
    mined = (att.softmax(-1) @ v).mean(2)
    return lr + mined


def visual_tokens(
    hr_pixels: torch.Tensor,
    *,
    clip_vision: nn.Module,
    stem: nn.Module,
    stages: nn.Module,
    query: nn.Module,
    key: nn.Module,
    value: nn.Module,
    projector: nn.Module,
    lr_size: int,
    grid: int = 1,
    image_global: bool = False,
) -> torch.Tensor:
    """MGM's ``encode_images`` for HR pixels ``(B, 3, S, S)`` (already normalised): ``(B, T, D)``.

    The LR input is the bilinear resize of the HR pixels to ``lr_size * grid``; with a grid it is
    cut into row-major crops, plus a global view (bilinear to ``lr_size``) placed first in the
    tokens; the global view mines the HR map resized by ``1/grid``, each crop its own quarter.
    """
    out = []
    for image in hr_pixels:
        image = image[None]
        lr_input = F.interpolate(
            image, size=(lr_size * grid,) * 2, mode="bilinear", align_corners=False
        )
        hr_map = convnext_fused(stem, stages, image)
        if grid == 1:
            lr = clip_patch_features(clip_vision, lr_input)
            tokens = mine(lr, hr_map, query, key, value)
        else:
            crops = lr_input.reshape(3, grid, lr_size, grid, lr_size).permute(1, 3, 0, 2, 4)
            crops = crops.reshape(-1, 3, lr_size, lr_size)
            c, h, w = hr_map.shape[1:]
            hr_crops = hr_map.reshape(1, c, grid, h // grid, grid, w // grid)
            hr_crops = hr_crops.permute(0, 2, 4, 1, 3, 5).flatten(0, 2)
            local = mine(clip_patch_features(clip_vision, crops), hr_crops, query, key, value)
            parts = [local.reshape(1, -1, local.shape[-1])]
            if image_global:
                whole = F.interpolate(
                    lr_input, size=(lr_size,) * 2, mode="bilinear", align_corners=False
                )
                hr_whole = F.interpolate(
                    hr_map.float(), scale_factor=1 / grid, mode="bilinear", align_corners=False
                )
                lr_whole = clip_patch_features(clip_vision, whole)
                parts.insert(0, mine(lr_whole, hr_whole, query, key, value))
            tokens = torch.cat(parts, dim=1)
        out.append(projector(tokens))
    return torch.cat(out)


def spliced_logits(llm: nn.Module, ids: list[int], visual: torch.Tensor) -> torch.Tensor:
    """Logits of an HF causal LM for one prompt whose ``-200`` ids are replaced, in order, by the
    rows of ``visual (n_images, T, D)``: ``(1, L', vocab)``."""
    embed = llm.get_input_embeddings()
    pieces, start, image = [], 0, 0
    for pos, token in enumerate(ids + [None]):
        if token == IMAGE_TOKEN_INDEX or token is None:
            if pos > start:
                pieces.append(embed(torch.tensor(ids[start:pos])))
            if token is not None:
                pieces.append(visual[image])
                image += 1
            start = pos + 1
    return llm(inputs_embeds=torch.cat(pieces)[None]).logits


def randomise(module: nn.Module, scale: float = 0.5) -> nn.Module:
    """Perturb every parameter (LayerNorm weights too), so a misplaced weight cannot go unseen."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module
