"""Stage 0 of the fine-detail benchmark: pretrain the vision towers on the generated domain.

Mini-Gemini starts from pretrained, frozen towers (CLIP ViT, ConvNeXt); none can be downloaded
here, so each tower is pretrained on the task's own images with one objective, the same for every
tower: max-pool its features over each cell of the board and classify the cell's glyph, colour and
frame (none, white, black) with a linear head (cross-entropy, summed). Same steps, batch and
learning rate for every tower; the head is thrown away and the tower is frozen for stages 1 and 2.
The optimiser loop (:func:`adamw_steps`) also serves the LLM's stage 0 (:mod:`._finedetail_llm`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit_bench._finedetail_data import COLOURS, FRAMES, GLYPHS
from vlmkit.miners._layout import as_map

CLASSES = (len(GLYPHS), len(COLOURS), len(FRAMES) + 1)  # glyph, colour, frame (0 = none)


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over the first 5% of ``steps``, then cosine decay to 0 (both stage 0s)."""
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))),
    )


def adamw_steps(
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    params: list[nn.Parameter],
    *,
    n: int,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    weight_decay: float = 0.01,
    max_grad_norm: float | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """The stage-0 loop: ``steps`` AdamW steps (:func:`warmup_cosine`) on ``loss_of(index)``,
    ``index`` being ``batch`` sample indices in ``range(n)`` drawn from a generator seeded with
    ``seed``. Returns ``{"wall_s", "cpu_s", "loss"}`` (the last step's loss)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = warmup_cosine(optimizer, steps)
    wall, cpu = time.perf_counter(), time.process_time()
    loss_value = float("nan")
    for step in range(steps):
        loss = loss_of(torch.randint(0, n, (batch,), generator=generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if progress is not None:
            progress(step + 1, loss_value)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "loss": loss_value}  # fmt: skip


def cell_features(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Encoder output (tokens ``(B, T, C)`` or map ``(B, C, h, w)``) -> cells ``(B, grid*grid, C)``.

    The map is max-pooled over each cell (``h`` must be a multiple of ``grid``).
    """
    fmap = as_map(features)
    if fmap.shape[-1] % grid:
        raise ValueError(
            f"a {fmap.shape[-1]}x{fmap.shape[-1]} map does not split into {grid}x{grid} cells"
        )
    return F.adaptive_max_pool2d(fmap.float(), grid).flatten(2).transpose(1, 2)


def pretrain_tower(
    encoder: nn.Module,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    *,
    grid: int,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``encoder`` in place on per-cell glyph, colour and frame classification; freeze it.

    ``pixels``: ``(N, 3, S, S)`` at the encoder's input size; ``targets``: class indices
    ``(N, grid*grid, 3)`` (glyph, colour, frame) in raster order.
    Returns ``{"wall_s", "cpu_s", "loss", "head"}``.
    """
    torch.manual_seed(seed)
    encoder.frozen = False
    encoder.requires_grad_(True)
    encoder.train()
    head = nn.Linear(encoder.info.width, sum(CLASSES))

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        logits = head(cell_features(encoder(pixels[index]), grid))
        return sum(
            F.cross_entropy(part.flatten(0, 1), targets[index][..., k].flatten())
            for k, part in enumerate(logits.split(CLASSES, dim=-1))
        )

    params = list(encoder.parameters()) + list(head.parameters())
    result = adamw_steps(loss_of, params, n=pixels.shape[0], steps=steps, batch=batch, lr=lr,
                         seed=seed, progress=progress)  # fmt: skip
    encoder.requires_grad_(False)
    encoder.frozen = True
    encoder.eval()
    return {
        **result,
        "head": head,  # only for probing: the head is not part of the tower
    }


@torch.no_grad()
def probe_accuracy(
    encoder: nn.Module, head: nn.Module, pixels: torch.Tensor, targets: torch.Tensor, *,
    grid: int, batch: int = 32,
) -> list[float]:
    """Per-cell glyph, colour and frame accuracy of a stage-0 tower with its head on held-out
    images (``targets`` as in :func:`pretrain_tower`)."""
    right = torch.zeros(len(CLASSES))
    for start in range(0, pixels.shape[0], batch):
        logits = head(cell_features(encoder(pixels[start : start + batch]), grid))
        for k, part in enumerate(logits.split(CLASSES, dim=-1)):
            right[k] += (part.argmax(-1) == targets[start : start + batch][..., k]).sum()
    return (right / targets[..., 0].numel()).tolist()
