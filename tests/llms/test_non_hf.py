"""An LLM with no transformers model inside (a GRU) passes the conformance checks and runs a
whole VisionLanguageModel (forward with loss, generate, chat, training stages): the model and
the trainer use only what :class:`vlmkit.interfaces.LLM` declares."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import vlmkit
from tests.test_conformance import check_llm
from vlmkit.components import get
from vlmkit.interfaces import LLM, LLMInfo, config_of
from vlmkit.llms._tokenizers import byte_level_tokenizer
from vlmkit.registry import registry
from vlmkit.train.stages import apply_stage


class GRULanguageModel(LLM):
    """A one-layer GRU language model over the byte-level vocabulary."""

    tiny_config = {"width": 24}

    def __init__(self, width: int = 32, vocab_size: int = 260) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, width)
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, vocab_size)
        self.tokenizer = byte_level_tokenizer()
        self.checkpointing = False

    @classmethod
    def describe(cls, **kwargs) -> LLMInfo:
        c = config_of(cls, kwargs)
        return LLMInfo(hidden_size=c["width"], vocab_size=c["vocab_size"])

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(input_ids)

    def forward(self, *, inputs_embeds, attention_mask=None, labels=None, **_):
        logits = self.head(self.rnn(inputs_embeds)[0])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)  # fmt: skip
        return SimpleNamespace(logits=logits, loss=loss)

    def generate(self, *, inputs_embeds, attention_mask=None, max_new_tokens=8, eos_token_id=None,
                 **_) -> torch.Tensor:  # fmt: skip
        stops = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
        hidden, state = self.rnn(inputs_embeds)
        new = []
        for _ in range(max_new_tokens):
            token = self.head(hidden[:, -1]).argmax(-1)
            new.append(token)
            if int(token[0]) in stops:
                break
            hidden, state = self.rnn(self.embedding(token)[:, None], state)
        return torch.stack(new, dim=1)

    def gradient_checkpointing_enable(self, **_) -> None:
        self.checkpointing = True


@pytest.fixture
def gru_llm():
    vlmkit.register("llm", "test-gru-lm", GRULanguageModel)
    yield get("llm", "test-gru-lm")
    registry("llm").unregister("test-gru-lm")


def test_passes_the_llm_conformance_checks(gru_llm, tmp_path):
    check_llm(gru_llm, tmp_path)


def test_runs_a_vision_language_model(gru_llm):
    torch.manual_seed(0)
    model = vlmkit.build({"base": "mgm-tiny", "llm": {"name": "test-gru-lm", "width": 24}})
    assert model.projector[-1].out_features == 24  # linked to the LLM's declared width
    image = Image.new("RGB", (40, 30), "red")
    ids = torch.tensor([[1, -200, 72, 105]])
    out = model(ids, labels=ids.clone(), images=[image])
    assert out.logits.shape == (1, 3 + model.num_visual_tokens, 260) and torch.isfinite(out.loss)
    new = model.generate(ids, images=[image], max_new_tokens=3, eos_token_id=[2])
    assert new.shape[0] == 1 and 1 <= new.shape[1] <= 3
    assert isinstance(model.chat(image, [{"role": "user", "content": "Hi"}], max_new_tokens=3), str)
    counts = apply_stage(model, "finetune")
    assert counts["llm"][0] == sum(p.numel() for p in model.llm.parameters()) and counts["llm"][1] == 0
    out.loss.backward()
    assert model.llm.head.weight.grad is not None and model.projector[0].weight.grad is not None
