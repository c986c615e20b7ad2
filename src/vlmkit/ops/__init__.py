"""Functional ops with interchangeable backends (PyTorch reference, exact fast PyTorch, Triton).

- :func:`patch_info_mining`: Mini-Gemini's patch info mining (docs/architecture.md, "Mini-Gemini, as vlmkit computes it").
"""

from vlmkit.ops.patch_info import patch_info_mining

__all__ = ["patch_info_mining"]
