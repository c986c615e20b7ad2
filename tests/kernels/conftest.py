"""Kernel tests run the Triton kernels in the CPU interpreter when there is no CUDA.

``TRITON_INTERPRET=1`` is set by the repository-level ``conftest.py`` before anything imports
:mod:`vlmkit.kernels`; nothing more is needed here.
"""
