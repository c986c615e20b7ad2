"""Stage 0 for the fine-detail benchmark's LLM: pretrain it on the boards given as symbols.

Mini-Gemini starts from a pretrained LLM that already reads what it is given; its stage 1 only
aligns the vision side to that LLM, with the LLM frozen. The tiny LLM here starts from random
weights, and a miner cannot learn to deliver the glyph through an LLM that does not read yet
(``docs/benchmarks.md``). So the LLM, like the towers, gets a disclosed stage 0: it learns the
task's conversations (and the captions, when a stage trains on them) with each image given as
symbols, cell ``i``'s visual token being the sum of learned embeddings of its glyph, colour and
frame (the per-cell labels of the towers' stage 0).
The symbol tables are thrown away; all three compositions start from this one LLM.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from vlmkit._splice import splice_visual_tokens
from vlmkit_bench._finedetail_fit import collator
from vlmkit_bench._finedetail_towers import CLASSES, adamw_steps


def pretrain_llm(
    model: Any,
    items: Sequence[dict[str, Any]],
    targets: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``model.llm`` in place on ``items`` (``{"input_ids", "labels", ...}``, one image
    each) with symbolic visual tokens; ``targets``: the items' cells ``(N, T, 3)`` (glyph, colour,
    frame class indices, raster order), ``T`` being ``model.num_visual_tokens``.

    Returns ``{"wall_s", "cpu_s", "loss"}`` (the last step's loss). The LLM is left frozen.
    """
    if targets.shape[:2] != (len(items), model.num_visual_tokens):
        raise ValueError(
            f"targets must be ({len(items)}, {model.num_visual_tokens}, 3) for {len(items)} items "
            f"and {model.num_visual_tokens} visual tokens, got {tuple(targets.shape)}"
        )
    torch.manual_seed(seed)
    llm = model.llm
    width = llm.embed(torch.zeros(1, 1, dtype=torch.long)).shape[-1]
    tables = nn.ModuleList(nn.Embedding(n, width) for n in CLASSES)
    llm.requires_grad_(True)
    llm.train()
    collate = collator(model)

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        inputs = collate([items[i] for i in index.tolist()])
        visual = sum(table(targets[index][..., k]) for k, table in enumerate(tables))
        spliced = splice_visual_tokens(
            inputs["input_ids"], inputs["attention_mask"], inputs["labels"], visual,
            embed=llm.embed, num_visual_tokens=model.num_visual_tokens,
        )  # fmt: skip
        return llm(**spliced).loss

    params = list(llm.parameters()) + list(tables.parameters())
    result = adamw_steps(loss_of, params, n=len(items), steps=steps, batch=batch, lr=lr,
                         seed=seed, weight_decay=0.0, max_grad_norm=1.0, progress=progress)  # fmt: skip
    llm.requires_grad_(False)
    llm.eval()
    return result
