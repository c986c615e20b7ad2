"""``openclip-convnext``: an open_clip ConvNeXt trunk, stages fused (Mini-Gemini's HR encoder).

The architecture is an open_clip model config (``vision_cfg.timm_model_name`` names the timm
ConvNeXt, as open_clip's ``TimmModel`` builds it); only the trunk's stem and stages are kept, under
Mini-Gemini's names, so state-dict keys are ``vision_stem.*`` and ``vision_stages.{i}.*``. The
selected stages' maps are fused as Mini-Gemini does (:func:`~vlmkit.encoders._base.fuse_stages`):
for ``convnext_large_d_320`` at 768 px, 192+384+768+1536 = 2880 channels on a 192x192 grid.

Architecture, in order of preference: ``model_cfg``; ``model_name`` (an open_clip config shipped
with open_clip); the ``model_cfg`` in ``pretrained``'s ``open_clip_config.json``; Mini-Gemini's rule
on ``pretrained``'s name (``convnext``+``large``+``d-320`` → ``convnext_large_d_320``,
``base``+``w-320`` → ``convnext_base_w_320``, ``xxlarge`` → ``convnext_xxlarge``); else
``convnext_large_d_320``. Weights come from ``open_clip_model.safetensors`` or, where only the
pickle format exists (as Mini-Gemini ships it), ``open_clip_pytorch_model.bin`` loaded with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import open_clip
import timm
import torch
from open_clip.factory import load_state_dict as load_open_clip_file
from torch import nn

from vlmkit._context import should_load_pretrained
from vlmkit._files import read_json
from vlmkit.encoders._base import fuse_stages
from vlmkit.interfaces import EncoderInfo, VisionEncoder, config_of
from vlmkit.registry import register

DEFAULT_MODEL = "convnext_large_d_320"
CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPEN_CLIP_PREFIXES = {
    "visual.trunk.stem.": "vision_stem.",
    "visual.trunk.stages.": "vision_stages.",
}


def model_name_from_path(path: str) -> str | None:
    """Mini-Gemini's rule: the open_clip config name implied by a tower's name, or None."""
    name = Path(path.rstrip("/")).name.lower().replace("_", "-")
    if "convnext" not in name:
        return None
    if "large" in name and "d-320" in name:
        return "convnext_large_d_320"
    if "base" in name and "w-320" in name:
        return "convnext_base_w_320"
    if "xxlarge" in name:
        return "convnext_xxlarge"
    return None


def _find_file(pretrained: str, filename: str, download: bool) -> str | None:
    """``filename`` in a local directory, or in a hub repo (from the cache, or downloaded)."""
    if os.path.isdir(pretrained):
        path = os.path.join(pretrained, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(pretrained, filename)
        if isinstance(cached, str):
            return cached
        return hf_hub_download(pretrained, filename) if download else None
    except Exception:  # noqa: BLE001 - not a repo id, absent file, offline: the caller reports it
        return None


def _named_config(name: str) -> dict[str, Any]:
    config = open_clip.get_model_config(name)
    if config is None:
        known = [n for n in open_clip.list_models() if "convnext" in n]
        raise ValueError(
            f"openclip-convnext: unknown open_clip model {name!r}; ConvNeXt configs: {known}"
        )
    return config


def resolve_model_cfg(
    pretrained: str | None = None,
    model_name: str | None = None,
    model_cfg: Mapping[str, Any] | None = None,
    *,
    download: bool = False,
) -> dict[str, Any]:
    """The open_clip model config (with ``vision_cfg``) of a tower, by the rule in the module doc.

    Reads at most ``open_clip_config.json``; with ``download=False`` a hub id is only looked up
    in the local cache.
    """
    if model_cfg is not None:
        return dict(model_cfg)
    if model_name is not None:
        return _named_config(model_name)
    if pretrained is None:
        return _named_config(DEFAULT_MODEL)
    config_path = _find_file(pretrained, CONFIG_FILE, download)
    if config_path is not None:
        stored = read_json(Path(config_path))
        if isinstance(stored, dict) and isinstance(stored.get("model_cfg"), dict):
            return dict(stored["model_cfg"])
    name = model_name_from_path(pretrained)
    if name is None:
        raise ValueError(
            f"openclip-convnext: cannot tell the architecture of pretrained={pretrained!r}: no "
            f"{CONFIG_FILE} with a 'model_cfg', and its name matches none of Mini-Gemini's rules "
            "(convnext+large+d-320, convnext+base+w-320, convnext+xxlarge); "
            "pass model_name or model_cfg"
        )
    return _named_config(name)


def _timm_name(model_cfg: Mapping[str, Any]) -> str:
    name = (model_cfg.get("vision_cfg") or {}).get("timm_model_name")
    if not name:
        raise ValueError(
            "openclip-convnext: model_cfg['vision_cfg'] needs a 'timm_model_name' (a timm "
            f"ConvNeXt, e.g. 'convnext_large'), got {model_cfg.get('vision_cfg')!r}"
        )
    return name


def _check_stages(stages: Sequence[int], num_stages: int) -> tuple[int, ...]:
    selected = tuple(int(s) for s in stages)
    if (
        not selected
        or list(selected) != sorted(set(selected))
        or not 0 <= selected[0] <= selected[-1] < num_stages
    ):
        raise ValueError(
            f"openclip-convnext: stages must be increasing indices in 0..{num_stages - 1}, "
            f"got {tuple(stages)}"
        )
    return selected


def _info(trunk: nn.Module, stages: tuple[int, ...], image_size: int) -> EncoderInfo:
    channels = [level["num_chs"] for level in trunk.feature_info]
    reductions = [level["reduction"] for level in trunk.feature_info]
    deepest = reductions[stages[-1]]
    if image_size < deepest:
        raise ValueError(
            f"openclip-convnext: image_size={image_size} is smaller than stage {stages[-1]}'s "
            f"reduction {deepest}"
        )
    return EncoderInfo(
        width=sum(channels[s] for s in stages),
        grid=image_size // reductions[stages[0]],
        image_size=image_size,
        layout="map",
        multi_scale=len(stages) > 1,
    )


def _image_size(model_cfg: Mapping[str, Any], image_size: int | None) -> int:
    if image_size is not None:
        return int(image_size)
    return int((model_cfg.get("vision_cfg") or {}).get("image_size", 224))


def _create_trunk(model_cfg: Mapping[str, Any], drop_path: float) -> nn.Module:
    trunk = timm.create_model(_timm_name(model_cfg), pretrained=False, drop_path_rate=drop_path)
    if not (hasattr(trunk, "stem") and hasattr(trunk, "stages")):
        raise ValueError(
            f"openclip-convnext: timm model {_timm_name(model_cfg)!r} has no `stem` and `stages`; "
            "use a ConvNeXt"
        )
    return trunk


def open_clip_to_vlmkit(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep an open_clip CLIP state dict's trunk: ``visual.trunk.stem.*`` → ``vision_stem.*``,
    ``visual.trunk.stages.*`` → ``vision_stages.*``. Keys already in that form pass through."""
    converted = {}
    for key, value in state_dict.items():
        for old, new in OPEN_CLIP_PREFIXES.items():
            if key.startswith(old):
                converted[new + key[len(old) :]] = value
        if key.startswith(tuple(OPEN_CLIP_PREFIXES.values())):
            converted[key] = value
    return converted


@register("vision_encoder", "openclip-convnext")
class OpenCLIPConvNeXtEncoder(VisionEncoder):
    """ConvNeXt stem + stages, fused: pixels ``(B, 3, S, S)`` → map ``(B, C, S/r, S/r)``.

    ``C`` sums the selected stages' channels and ``r`` is the first selected stage's reduction
    (4 for stage 0).

    - ``pretrained``: a directory (or hub id) with ``open_clip_config.json`` and open_clip weights.
    - ``model_name``: an open_clip config name such as ``convnext_large_d_320``.
    - ``model_cfg``: an open_clip model config (as ``open_clip_config.json``'s ``model_cfg``).
    - ``stages``: the stages to fuse, increasing; later stages than the last are not built.
    - ``image_size``: the input side (default: the config's ``vision_cfg.image_size``).
    - ``frozen``: no trainable parameters, always in eval mode, stochastic depth off.
    """

    tiny_config: ClassVar[dict[str, Any]] = {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {
                "timm_model_name": "test_convnext",
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "mlp",
                "timm_drop_path": 0.1,
                "image_size": 64,
            },
            "text_cfg": {
                "context_length": 8,
                "vocab_size": 64,
                "width": 16,
                "heads": 2,
                "layers": 1,
            },
        }
    }

    def __init__(
        self,
        pretrained: str | None = None,
        model_name: str | None = None,
        model_cfg: dict[str, Any] | None = None,
        stages: tuple[int, ...] = (0, 1, 2, 3),
        image_size: int | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        load = pretrained is not None and should_load_pretrained()
        config = resolve_model_cfg(pretrained, model_name, model_cfg, download=load)
        self.model_cfg = config
        vision_cfg = config.get("vision_cfg") or {}
        drop_path = 0.0 if frozen else float(vision_cfg.get("timm_drop_path") or 0.0)
        trunk = _create_trunk(config, drop_path)
        self.stages = _check_stages(stages, len(trunk.stages))
        info = _info(trunk, self.stages, _image_size(config, image_size))
        self.vision_stem = trunk.stem
        self.vision_stages = trunk.stages[: self.stages[-1] + 1]
        if load:
            self.load_open_clip(self._weights_path(pretrained))
        self.finish_build(info, frozen)

    def standalone_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this tower without files (used when saving)."""
        return {"pretrained": None, "model_name": None, "model_cfg": self.model_cfg}

    @classmethod
    def describe(cls, **kwargs: Any) -> EncoderInfo:
        """Width (summed stage channels) and grid from the open_clip config; builds on meta only."""
        c = config_of(cls, kwargs)
        config = resolve_model_cfg(c["pretrained"], c["model_name"], c["model_cfg"])
        with torch.device("meta"):
            trunk = _create_trunk(config, 0.0)
        selected = _check_stages(c["stages"], len(trunk.stages))
        return _info(trunk, selected, _image_size(config, c["image_size"]))

    @staticmethod
    def _weights_path(pretrained: str) -> str:
        for filename in WEIGHT_FILES:
            path = _find_file(pretrained, filename, download=True)
            if path is not None:
                return path
        raise FileNotFoundError(
            f"openclip-convnext: no {' or '.join(WEIGHT_FILES)} in {pretrained!r}"
        )

    def load_open_clip(self, source: str | Mapping[str, torch.Tensor]) -> None:
        """Load the trunk from an open_clip checkpoint file (``.safetensors``, or a pickle read with
        ``torch.load(weights_only=True)``) or state dict, keys ``visual.trunk.{stem,stages}.*``.
        Stages after the last selected one are ignored; any missing tower key raises."""
        state = (
            load_open_clip_file(source, weights_only=True) if isinstance(source, str) else source
        )
        own = self.state_dict()
        converted = {k: v for k, v in open_clip_to_vlmkit(state).items() if k in own}
        missing = sorted(set(own) - set(converted))
        if missing:
            raise ValueError(
                f"openclip-convnext: the checkpoint lacks {len(missing)} tower weight(s), "
                f"e.g. {missing[:5]}"
            )
        self.load_state_dict(converted)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: ``(B, 3, S, S)`` → fused map ``(B, C, S/r, S/r)``."""
        self.check_pixels(pixels)
        x = self.vision_stem(pixels)
        maps = []
        for index, stage in enumerate(self.vision_stages):
            x = stage(x)
            if index in self.stages:
                maps.append(x)
        return fuse_stages(maps)
