"""Shared pieces of the hostile-input probes: a saved ``mgm-tiny`` model to tamper with, and a
directory whose ``config.json`` names code that leaves a marker file when it runs."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import vlmkit

INDEX = "model.safetensors.index.json"


def save_tiny(directory: Path, **save_kwargs) -> Path:
    """``mgm-tiny`` with random weights, saved to ``directory``."""
    model = vlmkit.build("mgm-tiny")
    model.save_pretrained(directory, **save_kwargs)
    return directory


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def code_directory(root: Path, marker: Path) -> Path:
    """A folder shaped like a Hugging Face model with custom code (``auto_map``); importing
    that code writes ``marker``."""
    folder = root / "remote_code_model"
    folder.mkdir(parents=True)
    code = textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("code ran")
        from transformers import LlamaConfig

        class RemoteConfig(LlamaConfig):
            model_type = "remote-demo"
    """)
    (folder / "remote_config.py").write_text(code)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "remote-demo",
        "auto_map": {"AutoConfig": "remote_config.RemoteConfig",
                     "AutoModelForCausalLM": "remote_config.RemoteConfig"},
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 260,
    }))
    return folder


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
