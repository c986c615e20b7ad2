"""``timm``: any timm model with ``forward_intermediates`` as a vision encoder.

The selected intermediates (timm's ``forward_intermediates`` indices: stages of a CNN, blocks of a
ViT) are fused as Mini-Gemini fuses ConvNeXt stages (:func:`~vlmkit.encoders._base.fuse_stages`) and
returned as a map ``(B, C, h, w)`` or, for ``layout="tokens"``, flattened to ``(B, h*w, C)`` (prefix
tokens such as a ViT's class token are dropped). Layers after the last selected one, the final norm
and the head are pruned. vlmkit never downloads timm weights: ``pretrained`` is a local checkpoint,
loaded through timm (which applies the model's checkpoint filter, e.g. position-embedding resizing;
pickles are read with ``weights_only=True``). :meth:`TimmEncoder.describe` builds the model on the
meta device and runs a meta forward, so the record is exact for any model and size.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import timm
import torch
from timm.models import get_pretrained_cfg
from torch import nn

from vlmkit._context import should_load_pretrained
from vlmkit.encoders._base import disable_drop_path, fuse_stages
from vlmkit.interfaces import EncoderInfo, VisionEncoder, config_of
from vlmkit.registry import register

LAYOUTS = ("map", "tokens")
CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")


def _create_kwargs(
    model_name: str, model_kwargs: dict[str, Any] | None, image_size: int | None
) -> tuple[dict[str, Any], int]:
    """timm ``create_model`` keyword arguments and the input side.

    Models with a fixed input size (absolute position embeddings) are built for ``image_size``.
    """
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
        raise ValueError(f"timm: unknown model {model_name!r}; close names: {close}")
    kwargs = dict(model_kwargs or {})
    pretrained_cfg = get_pretrained_cfg(model_name)
    default = kwargs.get("img_size") or (pretrained_cfg.input_size[-1] if pretrained_cfg else 224)
    default = int(default if isinstance(default, int) else default[-1])
    size = default if image_size is None else int(image_size)
    if "img_size" in kwargs and size != default:
        raise ValueError(
            f"timm: image_size={size} disagrees with model_kwargs img_size={kwargs['img_size']}"
        )
    if pretrained_cfg is not None and pretrained_cfg.fixed_input_size and "img_size" not in kwargs:
        kwargs["img_size"] = size
    return kwargs, size


def _checkpoint_file(pretrained: str) -> str:
    if os.path.isfile(pretrained):
        return pretrained
    if os.path.isdir(pretrained):
        for name in CHECKPOINT_FILES:
            if os.path.isfile(os.path.join(pretrained, name)):
                return os.path.join(pretrained, name)
    raise ValueError(
        f"timm: pretrained must be a local checkpoint file or a directory holding one of "
        f"{CHECKPOINT_FILES} (vlmkit does not download timm weights), got {pretrained!r}"
    )


def _resolve_indices(
    out_indices: Sequence[int] | None, num_features: int, layout: str
) -> list[int]:
    if out_indices is None:
        return list(range(num_features)) if layout == "map" else [num_features - 1]
    indices = [int(i) + num_features if int(i) < 0 else int(i) for i in out_indices]
    if (
        not indices
        or indices != sorted(set(indices))
        or not 0 <= indices[0] <= indices[-1] < num_features
    ):
        raise ValueError(
            f"timm: out_indices must be increasing indices in {-num_features}..{num_features - 1} "
            f"(after negative ones count from the end), got {tuple(out_indices)}"
        )
    return indices


def _create_trunk(
    model_name: str,
    create_kwargs: dict[str, Any],
    out_indices: Sequence[int] | None,
    layout: str | None,
    checkpoint: str | None = None,
) -> tuple[nn.Module, list[int], str]:
    """The pruned timm model, its intermediate indices and the output layout."""
    kwargs: dict[str, Any] = {"num_classes": 0, **create_kwargs}
    if checkpoint is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": checkpoint})
    model = timm.create_model(model_name, **kwargs)
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(
            f"timm: model {model_name!r} has no forward_intermediates; pick another model"
        )
    if layout is None:
        layout = "tokens" if getattr(model, "num_prefix_tokens", None) is not None else "map"
    if layout not in LAYOUTS:
        raise ValueError(f"timm: layout must be one of {LAYOUTS}, got {layout!r}")
    indices = _resolve_indices(out_indices, len(model.feature_info), layout)
    model.prune_intermediate_layers(indices, prune_norm=True, prune_head=True)
    return model, indices, layout


def _features(
    trunk: nn.Module, pixels: torch.Tensor, indices: list[int], layout: str
) -> torch.Tensor:
    maps = trunk.forward_intermediates(
        pixels, indices=indices, intermediates_only=True, output_fmt="NCHW"
    )
    fused = fuse_stages(maps)
    return fused.flatten(2).transpose(1, 2) if layout == "tokens" else fused


@register("vision_encoder", "timm")
class TimmEncoder(VisionEncoder):
    """A timm model's fused intermediates: ``(B, 3, S, S)`` → ``(B, C, h, w)`` or ``(B, h*w, C)``.

    - ``model_name``: a timm model name (with an optional ``.tag``).
    - ``pretrained``: a local checkpoint file, or a directory holding ``model.safetensors`` or
      ``pytorch_model.bin``.
    - ``model_kwargs``: extra ``timm.create_model`` arguments (e.g. ``drop_path_rate``, ``dims``).
    - ``out_indices``: intermediates to fuse, increasing (negative ones count from the end);
      default: every feature level for maps, the last one for tokens.
    - ``layout``: ``"map"`` or ``"tokens"``; default tokens for models with prefix tokens (ViTs).
    - ``image_size``: the input side (default: the model's pretrained input size).
    - ``frozen``: no trainable parameters, always in eval mode, stochastic depth off.
    """

    tiny_config: ClassVar[dict[str, Any]] = {"model_name": "test_convnext", "image_size": 64}

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        out_indices: tuple[int, ...] | None = None,
        layout: str | None = None,
        image_size: int | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        create_kwargs, _ = _create_kwargs(model_name, model_kwargs, image_size)
        load = pretrained is not None and should_load_pretrained()
        checkpoint = _checkpoint_file(pretrained) if load else None
        self.trunk, self.indices, self.layout = _create_trunk(
            model_name, create_kwargs, out_indices, layout, checkpoint
        )
        if frozen:
            disable_drop_path(self.trunk)
        info = self.describe(model_name=model_name, model_kwargs=model_kwargs,
                             out_indices=out_indices, layout=layout, image_size=image_size)
        self.finish_build(info, frozen)

    def standalone_kwargs(self) -> dict[str, Any]:
        """A saved model names no weights file: the architecture comes from ``model_name``."""
        return {"pretrained": None}

    @classmethod
    def describe(cls, **kwargs: Any) -> EncoderInfo:
        """Width, grid and layout from a meta-device build and forward (no weights, no files)."""
        c = config_of(cls, kwargs)
        model_name, out_indices, layout = c["model_name"], c["out_indices"], c["layout"]
        create_kwargs, size = _create_kwargs(model_name, c["model_kwargs"], c["image_size"])
        with torch.device("meta"):
            trunk, indices, layout = _create_trunk(model_name, create_kwargs, out_indices, layout)
            try:
                out = _features(trunk, torch.empty(1, 3, size, size), indices, layout)
            except (RuntimeError, AssertionError) as err:
                raise ValueError(
                    f"timm: {model_name!r} cannot take {size} px input: {err}"
                ) from err
        if layout == "tokens":
            tokens, width = out.shape[1:]
            grid = round(tokens**0.5)
        else:
            width, grid, _ = out.shape[1:]
        return EncoderInfo(
            width=int(width),
            grid=int(grid),
            image_size=size,
            layout=layout,  # type: ignore[arg-type]
            multi_scale=len(indices) > 1,
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: ``(B, 3, S, S)`` → fused map ``(B, C, h, w)`` or tokens ``(B, h*w, C)``."""
        self.check_pixels(pixels)
        return _features(self.trunk, pixels, self.indices, self.layout)
