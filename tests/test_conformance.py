"""Every registry entry, plugins included, built at its smallest config.

Checks what the entry declares (``describe``) against what the built component does, and a
safetensors state-dict round trip. A new component is tested the moment it is registered.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlmkit
from vlmkit.interfaces import EncoderInfo, LLMInfo, MinerInfo, ProjectorInfo
from vlmkit.components import get


def _params(kind: str) -> list:
    return [pytest.param(name, id=f"{kind}:{name}") for name in vlmkit.available(kind)]


def _round_trip(module: torch.nn.Module, entry, tmp_path) -> torch.nn.Module:
    path = tmp_path / "weights.safetensors"
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    again = entry.factory(**entry.tiny)
    again.load_state_dict(load_file(str(path)))
    return again.eval()


def _encoder_output_shape(info: EncoderInfo, batch: int) -> tuple[int, ...]:
    if info.layout == "map":
        return (batch, info.width, info.grid, info.grid)
    return (batch, info.num_tokens, info.width)


@pytest.mark.parametrize("name", _params("vision_encoder"))
def test_vision_encoder(name, tmp_path):
    entry = get("vision_encoder", name)
    declared = entry.describe(**entry.tiny)
    assert isinstance(declared, EncoderInfo)
    encoder = entry.factory(**entry.tiny).eval()
    assert encoder.info == declared
    pixels = torch.randn(2, 3, declared.image_size, declared.image_size)
    with torch.no_grad():
        out = encoder(pixels)
        assert tuple(out.shape) == _encoder_output_shape(declared, 2)
        again = _round_trip(encoder, entry, tmp_path)
        torch.testing.assert_close(again(pixels), out, rtol=0, atol=0)


def _miner_inputs(entry) -> tuple[EncoderInfo, EncoderInfo | None]:
    """Encoder outputs the miner takes at its tiny config, found from what it declares: widths its
    ``linked_widths`` keywords state, else the first HR width its ``describe`` accepts."""
    links = getattr(entry.factory, "linked_widths", {})
    widths = {slot: entry.tiny[key] for key, (slot, _) in links.items() if key in entry.tiny}
    lr = EncoderInfo(width=widths.get("lr_encoder", 16), grid=4, image_size=32, layout="tokens")
    if not getattr(entry.factory, "uses_hr", False):
        return lr, None
    problems = []
    for hr_width in dict.fromkeys([widths.get("hr_encoder", 12), lr.width]):
        hr = EncoderInfo(width=hr_width, grid=8, image_size=64, layout="map", multi_scale=True)
        try:
            entry.describe(lr, hr, **entry.tiny)
        except ValueError as err:
            problems.append(str(err))
            continue
        return lr, hr
    pytest.fail(f"miner {entry.name!r} accepts none of the test's encoder outputs: {problems}")


def _features(info: EncoderInfo | None, batch: int) -> torch.Tensor | None:
    return None if info is None else torch.randn(*_encoder_output_shape(info, batch))


@pytest.mark.parametrize("name", _params("miner"))
def test_miner(name, tmp_path):
    entry = get("miner", name)
    lr, hr = _miner_inputs(entry)
    declared = entry.describe(lr, hr, **entry.tiny)
    assert isinstance(declared, MinerInfo)
    miner = entry.factory(**entry.tiny).eval()
    lr_x, hr_x = _features(lr, 2), _features(hr, 2)
    with torch.no_grad():
        out = miner(lr_x, hr_x)
        assert tuple(out.shape) == (2, declared.num_tokens, declared.width)
        again = _round_trip(miner, entry, tmp_path)
        torch.testing.assert_close(again(lr_x, hr_x), out, rtol=0, atol=0)


@pytest.mark.parametrize("name", _params("projector"))
def test_projector(name, tmp_path):
    entry = get("projector", name)
    declared = entry.describe(**entry.tiny)
    assert isinstance(declared, ProjectorInfo)
    projector = entry.factory(**entry.tiny).eval()
    x = torch.randn(2, 5, declared.in_dim)
    with torch.no_grad():
        out = projector(x)
        assert tuple(out.shape) == (2, 5, declared.out_dim)
        torch.testing.assert_close(_round_trip(projector, entry, tmp_path)(x), out, rtol=0, atol=0)


@pytest.mark.parametrize("name", _params("llm"))
def test_llm(name, tmp_path):
    check_llm(get("llm", name), tmp_path)


def check_llm(entry, tmp_path) -> None:
    """An LLM entry at its tiny config: declared widths, embeddings, logits, a round trip."""
    declared = entry.describe(**entry.tiny)
    assert isinstance(declared, LLMInfo)
    llm = entry.factory(**entry.tiny).eval()
    ids = torch.randint(0, declared.vocab_size, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        embeds = llm.embed(ids)
        assert tuple(embeds.shape) == (2, 7, declared.hidden_size)
        out = llm(inputs_embeds=embeds, attention_mask=mask, labels=ids)  # as the model calls it
        assert tuple(out.logits.shape) == (2, 7, declared.vocab_size)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        again = _round_trip(llm, entry, tmp_path)
        torch.testing.assert_close(
            again(inputs_embeds=again.embed(ids), attention_mask=mask).logits, out.logits,
            rtol=0, atol=0,
        )
    assert len(llm.tokenizer) <= declared.vocab_size


@pytest.mark.parametrize("name", _params("bridge"))
def test_bridge(name):
    entry = get("bridge", name)
    bridge = entry.factory(**entry.tiny)
    out = bridge("a red cube on a table", seed=0)
    assert isinstance(out, list) and len(out) >= 1
