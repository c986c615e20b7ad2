"""Triton kernels behind the ``"triton"`` backends of :mod:`vlmkit.ops`.

- :mod:`vlmkit.kernels.window_pooling`: fused forward and backward of the folded patch info mining.

Modules here import ``triton`` at import time; :mod:`vlmkit.ops` imports them only when a Triton
backend is used.
"""
