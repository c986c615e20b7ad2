"""What each kind of component promises: base classes and the capability records the builder checks.

A component is an ``nn.Module`` (or, for bridges, a plain object) whose constructor keyword arguments
are its config. Each class can also *describe* itself from those keyword arguments alone, without
allocating weights, through a ``describe`` classmethod returning one of the ``*Info`` records below.
The builder uses these records to check that neighbouring slots fit before anything is built.

Tensor layouts:
- a vision encoder maps pixels ``(B, 3, S, S)`` to either tokens ``(B, T, C)`` (``layout="tokens"``)
  or a feature map ``(B, C, h, w)`` (``layout="map"``);
- a miner maps the LR features (and optionally the HR features) to tokens ``(B, T, C_out)``;
- a projector maps ``(B, T, C_out)`` to the LLM's embedding width ``(B, T, D)``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import nn

from vlmkit._context import should_load_pretrained  # noqa: F401  (components consult it)


def config_of(component: type, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` bound to ``component``'s constructor, defaults filled in: the whole config that
    building it with ``kwargs`` uses.

    A ``describe(**kwargs)`` classmethod reads its parameters from here instead of repeating the
    constructor's signature, so ``plan`` checks what ``build`` uses. An unknown or a missing
    required key raises ``TypeError``.
    """
    signature = inspect.signature(component.__init__)
    bound = signature.bind(None, **kwargs)
    bound.apply_defaults()
    config = dict(bound.arguments)
    del config[next(iter(signature.parameters))]  # self
    return config


@dataclass(frozen=True)
class EncoderInfo:
    """What a vision encoder outputs for its configured input size.

    ``grid`` is the side of the spatial grid (tokens ``grid**2`` plus ``extra_tokens`` such as a
    CLS token, or a map ``grid x grid``). ``multi_scale`` marks encoders that fuse several stages.
    """

    width: int
    grid: int
    image_size: int
    layout: Literal["tokens", "map"] = "tokens"
    extra_tokens: int = 0
    multi_scale: bool = False

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid + self.extra_tokens


@dataclass(frozen=True)
class MinerInfo:
    """What a miner outputs given the encoders' infos: token width and tokens per image view."""

    width: int
    num_tokens: int


@dataclass(frozen=True)
class ProjectorInfo:
    in_dim: int
    out_dim: int


@dataclass(frozen=True)
class LLMInfo:
    hidden_size: int
    vocab_size: int


class VisionEncoder(nn.Module):
    """Base class of ``vision_encoder`` components.

    Subclasses implement ``forward(pixels: (B, 3, S, S)) -> (B, T, C) | (B, C, h, w)`` and
    ``describe(**kwargs) -> EncoderInfo``. ``info`` is the record for the built instance.
    """

    kind: ClassVar[str] = "vision_encoder"
    name: ClassVar[str] = "vision encoder"  # set to the registry name by ``register``
    info: EncoderInfo
    frozen: bool = False

    @classmethod
    def describe(cls, **kwargs: Any) -> EncoderInfo:  # pragma: no cover - interface
        raise NotImplementedError

    def finish_build(self, info: EncoderInfo, frozen: bool) -> None:
        """Record ``info`` and, when ``frozen``, drop every parameter's gradient and stay in eval mode.

        Subclasses call it at the end of ``__init__``, once their modules exist. A frozen tower
        keeps eval mode whatever ``train()`` is asked, so dropout, stochastic depth and batch-norm
        statistics never change under a training loop.
        """
        self.info = info
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> VisionEncoder:
        """Switch train/eval mode; a frozen encoder always stays in eval mode."""
        return super().train(mode and not self.frozen)

    def check_pixels(self, pixels: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``pixels`` is ``(B, 3, S, S)``, ``S = info.image_size``."""
        size = self.info.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(
                f"{self.name} expects pixels of shape (B, 3, {size}, {size}), "
                f"got {tuple(pixels.shape)}"
            )

    def output_info(self, image_size: int) -> EncoderInfo:
        """The record for another input size (same width; grid scales with the size)."""
        grid = image_size * self.info.grid // self.info.image_size
        return EncoderInfo(
            width=self.info.width,
            grid=grid,
            image_size=image_size,
            layout=self.info.layout,
            extra_tokens=self.info.extra_tokens,
            multi_scale=self.info.multi_scale,
        )


class Miner(nn.Module):
    """Base class of ``miner`` components: mix LR (and HR) features into visual tokens.

    ``forward(lr, hr=None)``: ``lr`` as the LR encoder gives it, ``hr`` as the HR encoder gives it
    (``None`` when the miner does not use an HR encoder); returns ``(B, T, width)``.
    ``describe(lr, hr, **kwargs)`` returns a :class:`MinerInfo` or raises ``ValueError`` naming
    what does not fit. ``uses_hr`` says whether an ``hr_encoder`` slot is required;
    ``linked_widths`` which keyword arguments take an encoder's width.
    """

    kind: ClassVar[str] = "miner"
    uses_hr: ClassVar[bool] = False
    # {keyword: (slot, info field)}: keyword arguments the builder fills in from a neighbour's
    # described output (or checks against it when the config states them).
    linked_widths: ClassVar[dict[str, tuple[str, str]]] = {}

    @classmethod
    def describe(
        cls, lr: EncoderInfo, hr: EncoderInfo | None = None, **kwargs: Any
    ) -> MinerInfo:  # pragma: no cover - interface
        raise NotImplementedError


class Projector(nn.Module):
    """Base class of ``projector`` components: ``(B, T, in_dim) -> (B, T, out_dim)``.

    ``linked_widths``: as on :class:`Miner`; a projector takes ``in_dim`` from the miner's width
    and ``out_dim`` from the LLM's hidden size unless a subclass declares otherwise.
    """

    kind: ClassVar[str] = "projector"
    linked_widths: ClassVar[dict[str, tuple[str, str]]] = {
        "in_dim": ("miner", "width"),
        "out_dim": ("llm", "hidden_size"),
    }

    @classmethod
    def describe(cls, **kwargs: Any) -> ProjectorInfo:  # pragma: no cover - interface
        raise NotImplementedError


class LLM(nn.Module):
    """Base class of ``llm`` components: a causal language model and its tokenizer.

    What the rest of vlmkit uses, and all it uses (the model, the trainer, LoRA):

    - ``describe(**kwargs) -> LLMInfo``; ``tokenizer`` (a transformers-style tokenizer: ``__call__``,
      ``decode``, ``pad_token_id``, ``eos_token_id``, ``bos_token_id``, ``save_pretrained``);
    - ``embed(input_ids: (B, L)) -> (B, L, D)``: the token embeddings;
    - ``forward(*, inputs_embeds: (B, L, D), attention_mask: (B, L), labels: (B, L) | None, ...)``:
      an output with ``logits`` ``(B, L, vocab)`` and, with labels, the shifted-token ``loss``;
    - ``generate(*, inputs_embeds, attention_mask, **generate_kwargs) -> (B, new)``: new token ids;
    - ``gradient_checkpointing_enable(**kwargs)``;
    - ``backbone()`` / ``set_backbone(module)``: the module LoRA adapters go into and its
      replacement (peft wraps it), with ``lora_target_modules`` the default modules to adapt.
    """

    kind: ClassVar[str] = "llm"
    lora_target_modules: ClassVar[str | list[str]] = "all-linear"

    @classmethod
    def describe(cls, **kwargs: Any) -> LLMInfo:  # pragma: no cover - interface
        raise NotImplementedError

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def generate(self, **kwargs: Any) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} does not generate")

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no gradient checkpointing")

    def backbone(self) -> nn.Module:
        """The module LoRA adapters go into (default: this module)."""
        return self

    def set_backbone(self, module: nn.Module) -> None:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} cannot take LoRA adapters")


class Bridge:
    """Base class of ``bridge`` components: turn an image prompt into images.

    ``__call__(prompt, *, negative_prompt=None, seed=None, steps=None, size=None) -> list[PIL.Image]``.
    """

    kind: ClassVar[str] = "bridge"

    @classmethod
    def describe(cls, **kwargs: Any) -> dict:
        return {}

    @staticmethod
    def check_prompt(prompt: Any) -> str:
        """The prompt without surrounding white space; ``ValueError`` unless a non-empty string."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"expected a non-empty image prompt, got {prompt!r}")
        return prompt.strip()
