"""Functional ops with interchangeable backends (PyTorch reference, exact fast PyTorch, Triton).

- :func:`patch_info_mining`: Mini-Gemini's patch info mining (DESIGN §4).
"""

from vlmkit.ops.mining import patch_info_mining

__all__ = ["patch_info_mining"]
