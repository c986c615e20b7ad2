"""Test-wide settings, for ``tests/`` and ``plugins/*/tests`` alike: never reach a model hub;
keep torch small and deterministic; hypothesis derandomised under CI."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models are overhead-bound: one thread each (inherited by the CLI, example and torchrun
# subprocesses) is faster than two, and two threads per process thrash when cores are shared.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Property tests: random examples locally (a failure prints the falsifying example and the seed to
# rerun it with), the same examples on every CI run, so CI's verdict depends on the code alone.
# Each test sets its own max_examples; deadlines are off because shared CI cores make timings noisy.
settings.register_profile("dev", deadline=None, print_blob=True)
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

torch.set_num_threads(1)

# Without CUDA, Triton kernels run in Triton's CPU interpreter. Triton chooses interpreter or
# compiler when a kernel is decorated (at import), so this must be set before anything imports
# vlmkit.kernels.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
