"""``diffusers``: any diffusers text-to-image pipeline as a vlmkit bridge (SDXL base 1.0 by default,
the model Mini-Gemini renders its prompts with).

The pipeline is loaded on the first call, not when the bridge (or a model with a bridge slot) is
built, so ``vlmkit build ... --summary`` stays cheap. ``pretrained`` is a hub id or a local
directory with ``model_index.json``; the pipeline class comes from that file unless
``pipeline_class`` names one. ``config`` instead builds a random pipeline from component configs
(tiny ones for tests, see :mod:`vlmkit_diffusers.tiny`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from vlmkit.interfaces import Bridge

DEFAULT_PIPELINE = "stabilityai/stable-diffusion-xl-base-1.0"


class DiffusersBridge(Bridge):
    """Render an image prompt with a diffusers pipeline: ``prompt -> [PIL.Image]``.

    - ``pretrained``: hub id or local directory of a text-to-image pipeline (default SDXL base 1.0).
    - ``pipeline_class``: a diffusers class name (e.g. ``"StableDiffusionXLPipeline"``); default:
      the class named in ``model_index.json``.
    - ``config``: component configs of a random SDXL pipeline (replaces ``pretrained``).
    - ``steps``, ``size``, ``guidance_scale``: defaults of each call.
    - ``device``: default CUDA when available, else CPU; ``dtype``: default float16 on CUDA,
      float32 elsewhere.
    """

    tiny_config: ClassVar[dict[str, Any]] = {"config": "tiny", "steps": 2, "size": 32}

    def __init__(
        self,
        pretrained: str = DEFAULT_PIPELINE,
        pipeline_class: str | None = None,
        config: dict[str, Any] | str | None = None,
        steps: int = 30,
        size: int | None = None,
        guidance_scale: float = 5.0,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        if steps < 1:
            raise ValueError(f"diffusers bridge: steps must be >= 1, got {steps}")
        self.pretrained = pretrained
        self.pipeline_class = pipeline_class
        self.config = config
        self.steps = steps
        self.size = size
        self.guidance_scale = guidance_scale
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype
        self._pipeline: Any = None

    @property
    def pipeline(self) -> Any:
        """The diffusers pipeline, loaded (or built from ``config``) on first use."""
        if self._pipeline is None:
            self._pipeline = self._load().to(self.device)
            self._pipeline.set_progress_bar_config(disable=True)
        return self._pipeline

    def _torch_dtype(self) -> torch.dtype:
        name = self.dtype or ("float16" if self.device.startswith("cuda") else "float32")
        try:
            return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
        except KeyError:
            raise ValueError(
                f"diffusers bridge: dtype must be float32, float16 or bfloat16, got {name!r}"
            ) from None

    def _load(self) -> Any:
        import diffusers

        if self.config is not None:
            from vlmkit_diffusers.tiny import TINY_SDXL, random_sdxl_pipeline

            config = TINY_SDXL if self.config == "tiny" else self.config
            if not isinstance(config, dict):
                raise ValueError(
                    f"diffusers bridge: config must be a dict of component configs or 'tiny', "
                    f"got {self.config!r}"
                )
            return random_sdxl_pipeline(config).to(dtype=self._torch_dtype())
        if self.pipeline_class is None:
            cls = diffusers.AutoPipelineForText2Image
        else:
            cls = getattr(diffusers, self.pipeline_class, None)
            if cls is None or not hasattr(cls, "from_pretrained"):
                raise ValueError(
                    f"diffusers bridge: pipeline_class {self.pipeline_class!r} is not a diffusers "
                    "pipeline class (e.g. 'StableDiffusionXLPipeline')"
                )
        try:
            return cls.from_pretrained(self.pretrained, torch_dtype=self._torch_dtype())
        except (OSError, ValueError) as err:
            raise ValueError(
                f"diffusers bridge: cannot load pipeline {self.pretrained!r} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from err

    def __call__(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        size: int | None = None,
    ) -> list[Any]:
        """Images for ``prompt``; ``size`` is the square side in pixels (default: the pipeline's)."""
        prompt = self.check_prompt(prompt)
        pipe = self.pipeline
        size = size or self.size
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "num_inference_steps": steps or self.steps,
            "guidance_scale": self.guidance_scale,
        }
        if size is not None:
            kwargs["height"] = kwargs["width"] = int(size)
        if seed is not None:
            generator_device = "cpu" if self.device == "mps" else self.device
            kwargs["generator"] = torch.Generator(generator_device).manual_seed(int(seed))
        return list(pipe(**kwargs).images)
