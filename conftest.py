"""Test-wide settings, for ``tests/`` and ``plugins/*/tests`` alike: never reach a model hub;
keep torch small and deterministic."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models are overhead-bound: one thread each (inherited by the CLI, example and torchrun
# subprocesses) is faster than two, and two threads per process thrash when cores are shared.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Without CUDA, Triton kernels run in Triton's CPU interpreter. Triton chooses interpreter or
# compiler when a kernel is decorated (at import), so this must be set before anything imports
# vlmkit.kernels.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
