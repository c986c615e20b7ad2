"""Base of the Hugging Face ViT towers (CLIP, SigLIP): config resolution, loading, layer pick.

The architecture comes from an explicit ``config`` dict (the vision config's fields; a full
two-tower config's ``vision_config`` is accepted too) or, when none is given, from the
``pretrained`` directory or hub id (its config file only). Weights load with
``from_pretrained`` in float32 unless :func:`vlmkit._context.should_load_pretrained` is False.
Features are the ``select_layer``-th hidden state (0 = embeddings, -1 = last layer, before the
final layer norm), as LLaVA and Mini-Gemini take them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import PretrainedConfig, PreTrainedModel

from vlmkit._context import should_load_pretrained
from vlmkit._files import check_local_source
from vlmkit.encoders._base import check_selected_layer
from vlmkit.interfaces import EncoderInfo, VisionEncoder, config_of


class HFViTTower(VisionEncoder):
    """A Hugging Face vision transformer returning one hidden layer as tokens ``(B, T, hidden)``.

    Subclasses set ``config_class``, ``model_class`` and ``has_cls`` (whether the first token is a
    class token); ``keep_cls`` on the instance decides whether it is returned.
    """

    config_class: ClassVar[type[PretrainedConfig]]
    model_class: ClassVar[type[PreTrainedModel]]
    has_cls: ClassVar[bool] = False
    config_overrides: ClassVar[dict[str, Any]] = {}

    @classmethod
    def hf_config(cls, pretrained: str | None, config: dict[str, Any] | None) -> PretrainedConfig:
        """The vision config: ``config`` if given, else read from ``pretrained`` (no weights)."""
        if config is not None:
            fields = dict(config.get("vision_config", config))
            fields.pop("model_type", None)
            hf_config = cls.config_class(**fields)
        elif pretrained is not None:
            check_local_source(pretrained, cls.name)
            hf_config = cls.config_class.from_pretrained(pretrained)
        else:
            raise ValueError(
                f"{cls.name} needs `pretrained` (a directory or hub id) or an architecture `config`"
            )
        for key, value in cls.config_overrides.items():
            setattr(hf_config, key, value)
        return hf_config

    @classmethod
    def describe(cls, **kwargs: Any) -> EncoderInfo:
        """Width, grid and token count from the config alone (reads at most a config file)."""
        c = config_of(cls, kwargs)
        hf_config = cls.hf_config(c["pretrained"], c["config"])
        return cls.info_for(hf_config, c["select_layer"], c["image_size"], cls.keeps_cls(c))

    @classmethod
    def keeps_cls(cls, config: dict[str, Any]) -> bool:
        """Whether a tower with this (whole) config returns its class token; none here."""
        return False

    @classmethod
    def info_for(
        cls, hf_config: PretrainedConfig, select_layer: int, image_size: int | None, keep_cls: bool
    ) -> EncoderInfo:
        """The :class:`EncoderInfo` of this tower for an input size (default: the config's)."""
        check_selected_layer(cls.name, select_layer, hf_config.num_hidden_layers)
        size = hf_config.image_size if image_size is None else int(image_size)
        if size < hf_config.patch_size:
            raise ValueError(
                f"{cls.name}: image_size={size} is smaller than patch_size={hf_config.patch_size}"
            )
        return EncoderInfo(
            width=hf_config.hidden_size,
            grid=size // hf_config.patch_size,
            image_size=size,
            layout="tokens",
            extra_tokens=int(keep_cls and cls.has_cls),
        )

    def _build(
        self,
        pretrained: str | None,
        config: dict[str, Any] | None,
        select_layer: int,
        image_size: int | None,
        keep_cls: bool,
        frozen: bool,
    ) -> None:
        hf_config = self.hf_config(pretrained, config)
        info = self.info_for(hf_config, select_layer, image_size, keep_cls)
        if pretrained is not None and should_load_pretrained():
            self.vision_tower = self.model_class.from_pretrained(
                pretrained, config=hf_config, dtype=torch.float32
            )
        else:
            self.vision_tower = self.model_class(hf_config)
        self.select_layer = select_layer
        self.skip_tokens = int(self.has_cls and not keep_cls)
        # Another input size than the one the position embeddings were trained at: interpolate them.
        self.interpolate_pos_encoding = info.image_size != hf_config.image_size
        self.finish_build(info, frozen)

    def standalone_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this tower from its config alone (used when saving):
        a saved model names no ``pretrained`` directory or hub id."""
        config = self.vision_tower.config.to_dict()
        for key in ("transformers_version", "_name_or_path", "architectures"):
            config.pop(key, None)
        for key in self.config_overrides:
            config.pop(key, None)
        return {"pretrained": None, "config": config}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: ``(B, 3, S, S)`` → tokens ``(B, T, hidden)`` of the selected layer."""
        self.check_pixels(pixels)
        out = self.vision_tower(
            pixel_values=pixels,
            output_hidden_states=True,
            interpolate_pos_encoding=self.interpolate_pos_encoding,
        )
        return out.hidden_states[self.select_layer][:, self.skip_tokens :]
