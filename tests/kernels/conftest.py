"""Kernel tests: without CUDA, run the Triton kernels in Triton's CPU interpreter.

Triton picks interpreter or compiler when a kernel is decorated, i.e. when the kernel module is
imported, so ``TRITON_INTERPRET`` is set here, before any test module imports it (and the module
is reloaded if something imported it earlier).
"""

import importlib
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    if "vlmkit.kernels.mining" in sys.modules:
        importlib.reload(sys.modules["vlmkit.kernels.mining"])
