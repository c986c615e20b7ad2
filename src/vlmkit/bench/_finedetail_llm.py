"""Stage 0 for the fine-detail benchmark's LLM: pretrain it on the boards given as symbols.

Mini-Gemini starts from a pretrained LLM that already reads what it is given; its stage 1 only
aligns the vision side to that LLM, with the LLM frozen. The tiny LLM here starts from random
weights, and a miner cannot learn to deliver the glyph through an LLM that does not read yet
(``docs/benchmarks.md``). So the LLM, like the towers, gets a disclosed stage 0: it learns the
task's conversations with each image given as symbols, cell ``i``'s visual token being the sum of
learned embeddings of its glyph, colour and frame (the per-cell labels of the towers' stage 0).
The symbol tables are thrown away; all three compositions start from this one LLM.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from vlmkit._splice import splice_visual_tokens
from vlmkit.bench._finedetail_towers import CLASSES, warmup_cosine
from vlmkit.data.collate import Collator


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
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    llm = model.llm
    width = llm.model.get_input_embeddings().weight.shape[1]
    tables = nn.ModuleList(nn.Embedding(n, width) for n in CLASSES)
    llm.requires_grad_(True)
    llm.train()
    params = list(llm.parameters()) + list(tables.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, steps)
    collate = Collator(llm.tokenizer.pad_token_id)

    def loss_of(index: list[int]) -> torch.Tensor:
        inputs = collate([items[i] for i in index])
        visual = sum(table(targets[index][..., k]) for k, table in enumerate(tables))
        spliced = splice_visual_tokens(
            inputs["input_ids"], inputs["attention_mask"], inputs["labels"], visual,
            embed=llm.embed, num_visual_tokens=model.num_visual_tokens,
        )  # fmt: skip
        return llm.model(**spliced).loss

    wall, cpu = time.perf_counter(), time.process_time()
    loss_value = float("nan")
    for step in range(steps):
        index = torch.randint(0, len(items), (batch,), generator=generator).tolist()
        loss = loss_of(index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if progress is not None:
            progress(step + 1, loss_value)
    llm.requires_grad_(False)
    llm.eval()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "loss": loss_value}  # fmt: skip
