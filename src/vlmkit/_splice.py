"""Splicing visual tokens into token embeddings at ``<image>`` placeholders, with padding."""

from __future__ import annotations

from typing import Callable

import torch

from vlmkit.data.conversation import IGNORE_INDEX, IMAGE_TOKEN, IMAGE_TOKEN_INDEX


def splice_visual_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    visual: torch.Tensor | None,
    *,
    embed: Callable[[torch.Tensor], torch.Tensor],
    num_visual_tokens: int,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Replace each placeholder in ``input_ids`` by one image's visual tokens.

    ``input_ids``: (B, L) with ``IMAGE_TOKEN_INDEX`` placeholders (padding marked by
    ``attention_mask == 0``); ``visual``: (n_images, T, D), images in order of appearance.
    Returns ``inputs_embeds`` (B, L', D), ``attention_mask`` (B, L') and, when labels are given,
    ``labels`` (B, L') with ``IGNORE_INDEX`` on visual positions and padding.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    attention_mask = attention_mask.bool()
    is_image = input_ids == IMAGE_TOKEN_INDEX
    n_placeholders = int((is_image & attention_mask).sum())
    n_images = 0 if visual is None else visual.shape[0]
    if n_placeholders != n_images:
        raise ValueError(
            f"the prompt has {n_placeholders} {IMAGE_TOKEN} placeholder(s) but {n_images} image(s) "
            "were given"
        )
    if visual is not None and visual.shape[1] != num_visual_tokens:
        raise ValueError(
            f"each image should give {num_visual_tokens} visual tokens, got {visual.shape[1]}"
        )
    text_embeds = embed(torch.where(is_image, torch.zeros_like(input_ids), input_ids))
    sequences: list[torch.Tensor] = []
    sequence_labels: list[torch.Tensor] = []
    image_index = 0
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b]
        ids, emb = input_ids[b][keep], text_embeds[b][keep]
        lab = labels[b][keep] if labels is not None else None
        pieces, piece_labels, start = [], [], 0
        for pos in torch.nonzero(ids == IMAGE_TOKEN_INDEX).flatten().tolist():
            pieces.append(emb[start:pos])
            pieces.append(visual[image_index].to(emb.dtype))  # type: ignore[index]
            if lab is not None:
                piece_labels.append(lab[start:pos])
                piece_labels.append(lab.new_full((num_visual_tokens,), IGNORE_INDEX))
            image_index += 1
            start = pos + 1
        pieces.append(emb[start:])
        sequences.append(torch.cat(pieces))
        if lab is not None:
            piece_labels.append(lab[start:])
            sequence_labels.append(torch.cat(piece_labels))

    length = max(s.shape[0] for s in sequences)
    batch, dim = len(sequences), text_embeds.shape[-1]
    out_embeds = text_embeds.new_zeros(batch, length, dim)
    out_mask = torch.zeros(batch, length, dtype=torch.long, device=input_ids.device)
    out_labels = input_ids.new_full((batch, length), IGNORE_INDEX)
    for b, seq in enumerate(sequences):
        n = seq.shape[0]
        span = slice(length - n, length) if padding_side == "left" else slice(0, n)
        out_embeds[b, span] = seq
        out_mask[b, span] = 1
        if sequence_labels:
            out_labels[b, span] = sequence_labels[b]
    result = {"inputs_embeds": out_embeds, "attention_mask": out_mask}
    if labels is not None:
        result["labels"] = out_labels
    return result
