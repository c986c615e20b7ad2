"""Image-generation bridges (kind ``bridge``) and Mini-Gemini's generation protocol.

A bridge turns an image prompt into images: ``bridge(prompt, *, negative_prompt, seed, steps,
size) -> list``. vlmkit ships ``prompt-only`` (returns the prompt text); the diffusers bridge is
the first-party plugin ``plugins/vlmkit-diffusers``. :func:`request_image` runs the protocol: the
user turn gets ``<GEN>``, the answer's last ``<h>...</h>`` pair is the prompt, the bridge renders it.
"""

from vlmkit.bridges.generation import NO_IMAGE_PROMPT, ImageRequest, request_image, save_outputs

__all__ = ["ImageRequest", "NO_IMAGE_PROMPT", "request_image", "save_outputs"]
