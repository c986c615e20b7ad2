"""``VisionLanguageModel``: a built composition of encoders, miner, projector and LLM.

Images become visual tokens ``(B, T, D)`` (:meth:`VisionLanguageModel.encode_images`); each ``<image>``
placeholder (id ``IMAGE_TOKEN_INDEX``) in the token ids is replaced by one image's ``T`` tokens, with
labels ``-100`` on those positions. ``T`` comes from the built model (:attr:`num_visual_tokens`); the
splice checks both the image count and the per-image token count and names them when they differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from vlmkit._checkpoint import load_state, read_config, save_model
from vlmkit._replace import recover_directory
from vlmkit._splice import splice_visual_tokens
from vlmkit._prompt import chat_prompt_ids
from vlmkit.builder import create_components, plan
from vlmkit.config import VLMConfig
from vlmkit.data.conversation import IMAGE_TOKEN, IMAGE_TOKEN_INDEX, check_messages, get_template
from vlmkit.data.processor import ImageProcessor
from vlmkit.data.views import split_views
from vlmkit.interfaces import EncoderInfo
from vlmkit.miners._layout import as_map


class VisionLanguageModel(nn.Module):
    """A vision-language model composed of one component per slot (see :mod:`vlmkit.builder`)."""

    def __init__(
        self,
        config: VLMConfig,
        *,
        lr_encoder: nn.Module,
        miner: nn.Module,
        projector: nn.Module,
        llm: nn.Module,
        hr_encoder: nn.Module | None = None,
        bridge: Any = None,
        plan: Any = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.lr_encoder = lr_encoder
        self.hr_encoder = hr_encoder
        self.miner = miner
        self.projector = projector
        self.llm = llm
        self.bridge = bridge
        lr_info: EncoderInfo = lr_encoder.info
        hr_info: EncoderInfo | None = hr_encoder.info if hr_encoder is not None else None
        if plan is not None:
            self.tokens_per_view = plan.tokens_per_view
        else:
            self.tokens_per_view = type(miner).describe(lr_info, hr_info).num_tokens
        self.processor = ImageProcessor(
            lr_size=lr_info.image_size,
            hr_size=hr_info.image_size if hr_info is not None else None,
            image_grid=config.image_grid,
            image_global=config.image_global,
            aspect=config.image_aspect_ratio,
        )

    # ------------------------------------------------------------------ images
    @property
    def num_views(self) -> int:
        return self.config.num_views

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image as the LLM receives them (all HD views together)."""
        return self.tokens_per_view * self.num_views

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    def _encoder_dtype(self, encoder: nn.Module) -> torch.dtype:
        param = next(encoder.parameters(), None)
        return param.dtype if param is not None else torch.float32

    def preprocess(self, images: Any) -> dict[str, Any]:
        """PIL image(s) or a pixel tensor → the processor's ``{"lr", "hr", "num_views"}``."""
        if isinstance(images, dict):
            return images
        return self.processor(images)

    def encode_images(self, images: Any) -> torch.Tensor:
        """Visual tokens ``(B, num_visual_tokens, D)`` exactly as the LLM receives them.

        ``images``: a PIL image, a list of PIL images, a pixel tensor ``(B, 3, S, S)`` at the
        processor's input size, or the processor's output dict.
        """
        pixels = self.preprocess(images)
        lr = pixels["lr"]
        views = self.num_views
        if lr.shape[0] % views:
            raise ValueError(f"got {lr.shape[0]} LR views, expected a multiple of {views} per image")
        batch = lr.shape[0] // views
        device = next(self.lr_encoder.parameters()).device
        lr_features = self.lr_encoder(lr.to(device, self._encoder_dtype(self.lr_encoder)))
        hr_features = None
        if self.hr_encoder is not None:
            hr = pixels.get("hr")
            if hr is None:
                raise ValueError("this model has an hr_encoder but no HR pixels were given")
            hr_features = self.hr_encoder(hr.to(device, self._encoder_dtype(self.hr_encoder)))
            if views > 1:
                hr_features = split_views(
                    as_map(hr_features), self.config.image_grid, self.config.image_global
                )
        mined = self.miner(lr_features, hr_features)
        tokens = self.projector(mined.to(self._encoder_dtype(self.projector)))
        tokens = tokens.reshape(batch, views * tokens.shape[1], tokens.shape[2])
        if tokens.shape[1] != self.num_visual_tokens:
            raise ValueError(
                f"the vision side produced {tokens.shape[1]} tokens per image, but the model was built "
                f"for {self.num_visual_tokens} (check the image size given to the encoders)"
            )
        return tokens

    # ------------------------------------------------------------------ LLM
    def _inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        images: Any,
        padding_side: str,
        new_tokens: int = 0,
    ) -> dict[str, torch.Tensor]:
        n_placeholders = int((input_ids == IMAGE_TOKEN_INDEX).sum())
        visual = None
        if images is not None:
            visual = self.encode_images(images)
        elif n_placeholders:
            raise ValueError(
                f"the prompt has {n_placeholders} {IMAGE_TOKEN} placeholder(s) but no images were given"
            )
        inputs = splice_visual_tokens(
            input_ids.to(self.device),
            None if attention_mask is None else attention_mask.to(self.device),
            None if labels is None else labels.to(self.device),
            visual,
            embed=self.llm.embed,
            num_visual_tokens=self.num_visual_tokens,
            padding_side=padding_side,
        )
        self._check_length(inputs["inputs_embeds"].shape[1], n_placeholders, new_tokens)
        return inputs

    def _check_length(self, length: int, n_images: int, new_tokens: int) -> None:
        """The LLM's context (``llm.context_length``, when it states one) must hold the sequence."""
        context = getattr(self.llm, "context_length", None)
        if context is None or length + new_tokens <= context:
            return
        visual = n_images * self.num_visual_tokens
        what = f"the input is {length} tokens ({visual} of them visual)"
        if new_tokens:
            what += f" and {new_tokens} new tokens were asked for"
        raise ValueError(
            f"{what}, but the LLM's context holds {context} tokens; shorten the conversation"
            + (" or lower max_new_tokens" if new_tokens else "")
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        images: Any = None,
        **kwargs: Any,
    ) -> Any:
        """LLM output (with ``loss`` when ``labels`` are given) for ids ``(B, L)`` with placeholders."""
        inputs = self._inputs(input_ids, attention_mask, labels, images, padding_side="right")
        return self.llm(**inputs, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        images: Any = None,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids ``(B, new)``; prompts are left-padded, visual tokens enter the prefill only."""
        new_tokens = int(generate_kwargs.get("max_new_tokens") or 0)
        inputs = self._inputs(
            input_ids, attention_mask, None, images, padding_side="left", new_tokens=new_tokens
        )
        inputs.pop("labels", None)
        tok = self.llm.tokenizer
        generate_kwargs.setdefault("pad_token_id", tok.pad_token_id)
        return self.llm.generate(**inputs, **generate_kwargs)

    def _stop_ids(self, stop_str: str | None) -> list[int]:
        tok = self.llm.tokenizer
        ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
        if stop_str:
            stop = tok.convert_tokens_to_ids(stop_str)
            if isinstance(stop, int) and stop != tok.unk_token_id:
                ids.append(stop)
        return ids

    def chat(
        self,
        images: Any,
        messages: Sequence[dict[str, str]],
        *,
        template: str | None = None,
        image_label: str | None = None,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        streamer: Any = None,
        **generate_kwargs: Any,
    ) -> str:
        """Reply to ``messages`` (``[{"role": "user"|"assistant", "content": "<image>\\n..."}]``).

        ``images``: ``None``, a PIL image or a list of them, one per ``<image>`` in the messages. With
        images and no placeholder, one ``<image>\\n`` per image is put before the first user
        message. A prompt with two or more images labels each with ``image_label`` (default: the
        config's; Mini-Gemini's is ``"Image {index}:"``, giving ``Image 1:<image>``).
        """
        check_messages(messages)
        messages = [dict(m) for m in messages]
        image_list = _as_list(images)
        n_tags = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
        if image_list and n_tags == 0:
            first_user = next((m for m in messages if m["role"] == "user"), None)
            if first_user is None:
                raise ValueError("chat needs at least one user message")
            first_user["content"] = (IMAGE_TOKEN + "\n") * len(image_list) + first_user["content"]
            n_tags = len(image_list)
        if n_tags != len(image_list):
            raise ValueError(
                f"the messages have {n_tags} {IMAGE_TOKEN} placeholder(s) but {len(image_list)} "
                "image(s) were given"
            )
        chat_template = get_template(template or self.config.chat_template)
        label = self.config.image_label if image_label is None else image_label
        tok = self.llm.tokenizer
        ids = chat_prompt_ids(messages, tok, chat_template, image_label=label)
        ids = torch.tensor([ids], dtype=torch.long)
        out = self.generate(
            ids,
            images=images if isinstance(images, torch.Tensor) else (image_list or None),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            eos_token_id=self._stop_ids(chat_template.stop_str),
            streamer=streamer,
            **generate_kwargs,
        )
        reply = tok.decode(out[0], skip_special_tokens=True)
        if chat_template.stop_str and chat_template.stop_str in reply:
            reply = reply[: reply.index(chat_template.stop_str)]
        return reply.strip()

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path, *, max_shard_size: int | str = "2GB") -> None:
        """Write ``config.json``, the tokenizer and safetensors weights (sharded above the size)."""
        save_model(self, Path(directory), max_shard_size=max_shard_size)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
    ) -> VisionLanguageModel:
        """Load a directory written by :meth:`save_pretrained`; logits equal the saved model's.

        Nothing in the directory runs code: ``trust_remote_code`` in its ``config.json`` is
        ignored; only this argument may allow a slot to run the code its files name. A copy left
        aside by a save that was killed is restored first."""
        directory = Path(directory)
        recover_directory(directory)
        model = build(read_config(directory, trust_remote_code=trust_remote_code), load_pretrained=False)
        state = load_state(directory)
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shapes that differ from the config's
            raise ValueError(f"{directory}: weights do not match the config: {err}") from None
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{directory}: weights do not match the config: missing {result.missing_keys[:10]}, "
                f"unexpected {result.unexpected_keys[:10]}"
            )
        if device is not None:
            model.to(device)
        return model.eval()

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> VisionLanguageModel:
        """:func:`build` (same keyword arguments)."""
        return build(config, **kwargs)

def _as_list(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images)
    return [images]



def build(
    config: VLMConfig | Mapping[str, Any] | str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    load_pretrained: bool = True,
) -> VisionLanguageModel:
    """A :class:`VisionLanguageModel` from a config (dict, YAML/JSON path, preset name or
    :class:`~vlmkit.config.VLMConfig`) after :func:`~vlmkit.builder.plan` has checked it.

    ``device="meta"`` builds the architecture without weights or files (for summaries);
    ``load_pretrained=False`` builds random weights even where a slot names pretrained ones.
    """
    checked = plan(config)
    resolved, parts = create_components(checked, device=device, load_pretrained=load_pretrained)
    model = VisionLanguageModel(resolved, plan=checked, **parts)
    if device is not None and torch.device(device).type != "meta":
        model.to(device)
    if dtype is not None:
        model.to(dtype)
    return model
