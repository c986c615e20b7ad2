"""What the official Mini-Gemini loader takes from a release, restated as rules.

**Tower weights.** The official loader builds both towers from their own directories, then reads the
weights it loads into MGM's modules from a subset of the checkpoint: only the shards (listed in
``model.safetensors.index.json``) that hold at least one key containing ``vlm_uni``, ``vision_fpn``
or ``vision_stages``. From what it read it takes every CLIP weight (``vision_tower.vision_tower.*``)
and, only with ``optimize_vision_tower_aux``, the ConvNeXt stem and stages. So the checkpoint's CLIP
replaces the tower directory's only when the CLIP keys sit in such shards: true of a single-file or
two-shard release, not of one cut into small shards. A module whose keys are split between read and
skipped shards makes the official loader fail (its ``load_state_dict`` is strict); vlmkit raises
:class:`MGMFormatError` there and names the switch. The official loader cannot read a release
without an index (one ``model.safetensors``); vlmkit treats that file as one read shard.

**Tokenizer.** The official loader reads every non-Mixtral, non-Gemma tokenizer with
``use_fast=False``: LLaMA's sentencepiece ``tokenizer.model`` through transformers 4's slow
``LlamaTokenizer``. Mixtral's is read with transformers 4.36's fast ``LlamaTokenizerFast``, which
computes the slow tokenizer's legacy mode whatever the config's ``legacy`` says (measured on
2026-12-04: equal prompt ids on 1,800 of 1,800 generated prompts from ``tokenizer.model`` alone and
1,800 of 1,800 from the ``tokenizer.json`` it writes); transformers 5 reads that ``tokenizer.json``
differently (28 to 115 of 200 equal per template and mode).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from vlmkit.llms._sentencepiece import VOCAB_FILE, has_only_sentencepiece, tokenizer_class

CLIP_WEIGHTS = ("official", "checkpoint", "tower")
# Substrings of the keys whose shards the official loader reads.
READ_MARKERS = ("vlm_uni", "vision_fpn", "vision_stages")
CLIP_PREFIX = "model.vision_tower.vision_tower."
# The ConvNeXt modules the official loader fills one by one (each load is strict).
AUX_MODULES = ("model.vision_tower_aux.vision_stem.", "model.vision_tower_aux.vision_stages.")
_LLAMA_TOKENIZERS = {None, "LlamaTokenizer", "LlamaTokenizerFast"}


class MGMFormatError(ValueError):
    """A directory, config field or weight does not fit the MGM release format."""


def read_shards(files: Mapping[str, Path]) -> set[Path]:
    """The weight files the official loader reads: those holding a key with a marker."""
    return {file for key, file in files.items() if any(m in key for m in READ_MARKERS)}


def _module_keys(
    keys: list[str], prefix: str, files: Mapping[str, Path], shards: set[Path], what: str
) -> list[str]:
    """``keys`` under ``prefix`` when all sit in ``shards``, none when none do; else an error."""
    own = [k for k in keys if k.startswith(prefix)]
    read = [k for k in own if files[k] in shards]
    if read and len(read) < len(own):
        skipped = sorted({files[k].name for k in own if files[k] not in shards})
        raise MGMFormatError(
            f"{len(own) - len(read)} of the {len(own)} {what} weights ({prefix}*) sit in shard(s) "
            f"{skipped}, which the official loader does not read (they hold no "
            f"{'/'.join(READ_MARKERS)} key), and the others in shards it reads: the official code "
            "cannot load this release. Choose with clip_weights='checkpoint' (all of the "
            "checkpoint's) or clip_weights='tower' (the tower directory's CLIP)"
        )
    return read


def checkpoint_vision_keys(
    files: Mapping[str, Path],
    vision_keys: list[str],
    *,
    clip_weights: str = "official",
    optimize_aux: bool = False,
) -> list[str]:
    """The MGM keys (of ``vision_keys``) whose checkpoint weights the model takes.

    ``files``: ``{key: weight file}`` of the release. Projector and mining weights are always taken;
    CLIP and ConvNeXt weights by the rule above (``clip_weights``: ``"official"``,
    ``"checkpoint"`` or ``"tower"``; ``optimize_aux``: the config's ``optimize_vision_tower_aux``).
    """
    if clip_weights not in CLIP_WEIGHTS:
        raise MGMFormatError(
            f"clip_weights must be one of {list(CLIP_WEIGHTS)}, got {clip_weights!r}"
        )
    towers = (CLIP_PREFIX, "model.vision_tower_aux.")
    wanted = [k for k in vision_keys if not k.startswith(towers)]
    shards = read_shards(files)
    if clip_weights == "official":
        wanted += _module_keys(vision_keys, CLIP_PREFIX, files, shards, "CLIP")
    elif clip_weights == "checkpoint":
        wanted += [k for k in vision_keys if k.startswith(CLIP_PREFIX)]
    if optimize_aux:
        for prefix in AUX_MODULES:
            if clip_weights == "official":
                wanted += _module_keys(vision_keys, prefix, files, shards, "ConvNeXt")
            else:
                wanted += [k for k in vision_keys if k.startswith(prefix)]
    return wanted


def tokenizer_settings(root: str | Path, llm: str) -> dict[str, Any]:
    """The ``hf-causal-lm`` tokenizer options that give the official loader's ids for a release.

    A LLaMA-class ``tokenizer.model`` (``tokenizer_class`` LlamaTokenizer or unset) is read with
    the slow semantics (``tokenizer_backend="llama-sentencepiece"``): in a Llama-architecture
    release as its config says (the official loader's ``use_fast=False``); in any other release
    (Mixtral: ``use_fast=True``) in legacy mode, which is what transformers 4.36's fast LLaMA
    tokenizer computes, when there is no ``tokenizer.json`` or that file prepends ``▁`` in its
    normalizer. Everything else is read by transformers (``{"tokenizer_backend": "transformers"}``).
    """
    root = Path(root)
    transformers = {"tokenizer_backend": "transformers"}
    if not (root / VOCAB_FILE).is_file() or tokenizer_class(root) not in _LLAMA_TOKENIZERS:
        return transformers
    slow = {"tokenizer_backend": "llama-sentencepiece"}
    if llm == "llama":
        return slow
    if has_only_sentencepiece(root) or _prepends_underline(root / "tokenizer.json"):
        return {**slow, "tokenizer_kwargs": {"legacy": True}}
    return transformers


def _prepends_underline(file: Path) -> bool:
    """True when a ``tokenizer.json``'s normalizer prepends ``▁`` (transformers 4's LLaMA
    conversion: every piece between special tokens gets sentencepiece's dummy prefix)."""
    try:
        normalizer = json.loads(file.read_text()).get("normalizer") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
    steps = normalizer.get("normalizers", [normalizer]) if isinstance(normalizer, dict) else []
    return any(
        isinstance(step, dict) and step.get("type") == "Prepend" and step.get("prepend") == "▁"
        for step in steps
    )
