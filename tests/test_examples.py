"""Every ``examples/*.py`` runs to completion in a fresh interpreter (each asserts what it shows).

New example files are picked up automatically; those that load real weights or take long are
marked slow (still run in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._assets import smollm2_dir
from vlmkit.llms.hf import resolve_path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SLOW = {"smollm2_backbone.py"}  # dequantises a GGUF LLM (about 30 s)


def _params() -> list:
    return [
        pytest.param(path, id=path.name, marks=[pytest.mark.slow] if path.name in SLOW else [])
        for path in sorted(EXAMPLES.glob("*.py"))
    ]


def test_examples_exist():
    names = {p.name for p in EXAMPLES.glob("*.py")}
    assert {"compose_llava.py", "compose_mgm.py", "custom_encoder.py", "chat_mgm_tiny.py"} <= names


@pytest.mark.parametrize("path", _params())
def test_example_runs(path, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    if smollm2_dir() is not None:
        env["SMOLLM2_DIR"] = resolve_path(smollm2_dir())
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{path.name} printed nothing"
