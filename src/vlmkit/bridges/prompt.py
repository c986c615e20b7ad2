"""The ``prompt-only`` bridge: hands back the image prompt for users with their own image service."""

from __future__ import annotations

from typing import Any

from vlmkit.interfaces import Bridge
from vlmkit.registry import register


@register("bridge", "prompt-only")
class PromptOnlyBridge(Bridge):
    """Returns ``[prompt]`` instead of images; ``negative_prompt`` and the rest are ignored."""

    tiny_config: dict[str, Any] = {}

    def __call__(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        size: int | None = None,
    ) -> list[str]:
        return [self.check_prompt(prompt)]
