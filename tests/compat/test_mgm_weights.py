"""Which tower weights an MGM release's checkpoint supplies: the official loader's shard rule
(the default), ``clip_weights="checkpoint"`` / ``"tower"``, and the ConvNeXt rule; on tiny releases
re-cut into small shards, compared with MGM's computation (``tests/_mgm.py``)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModel

from tests import _mgm
from tests.compat.test_mgm import write_release
from vlmkit.compat import mgm
from vlmkit.compat._mgm_rules import read_shards


def reshard(release, shard_of) -> dict[str, str]:
    """Rewrite the release's weights as shards named by ``shard_of(key)``; returns the map."""
    state = {}
    for file in sorted(release.glob("model*.safetensors")):
        state.update(load_file(str(file)))
        file.unlink()
    (release / mgm.INDEX_FILE).unlink(missing_ok=True)
    weight_map = {key: shard_of(key) for key in state}
    for name in sorted(set(weight_map.values())):
        keys = [k for k, f in weight_map.items() if f == name]
        save_file({k: state[k] for k in keys}, str(release / name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (release / mgm.INDEX_FILE).write_text(json.dumps(index))
    return weight_map


def by_module(key: str) -> str:
    """Small shards: the LLM, CLIP, the ConvNeXt stem, its stages, and MGM's own modules apart."""
    for prefix, name in (
        ("model.vision_tower.vision_tower.", "clip"),
        ("model.vision_tower_aux.vision_stem.", "stem"),
        ("model.vision_tower_aux.vision_stages.", "stages"), ("model.vlm_uni_", "uni"),
        ("model.mm_projector.", "uni"),
    ):  # fmt: skip
        if key.startswith(prefix):
            return f"model-{name}.safetensors"
    return "model-llm.safetensors"


def clip_beside_mining(key: str) -> str:
    """As :func:`by_module`, with CLIP in the shard of MGM's own modules."""
    if key.startswith("model.vision_tower.vision_tower."):
        return "model-uni.safetensors"
    return by_module(key)


def _tokens(model, parts, pixels, clip_vision):
    with torch.no_grad():
        expected = _mgm.visual_tokens(
            pixels, lr_size=32, clip_vision=clip_vision,
            **{k: v for k, v in parts.items() if k not in ("llm", "clip_vision")},
        )  # fmt: skip
        model.miner.backend = "reference"
        return model.encode_images(pixels), expected


def _assert_close(tokens, expected):
    torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_clip_keys_in_a_shard_the_official_loader_skips(tmp_path):
    release, parts, _ = write_release(tmp_path)
    weight_map = reshard(release, by_module)
    files = {k: release / f for k, f in weight_map.items()}
    read = {f.name for f in read_shards(files)}
    assert read == {"model-stages.safetensors", "model-uni.safetensors"}
    tower_clip = CLIPVisionModel.from_pretrained(str(tmp_path / "clip-vit-tiny")).eval()
    pixels = torch.randn(2, 3, 64, 64)

    # Default: as the official loader, the tower directory's CLIP (its shard is not read).
    tokens, expected = _tokens(mgm.load(release), parts, pixels, tower_clip)
    _assert_close(tokens, expected)
    tokens, expected = _tokens(mgm.load(release, clip_weights="tower"), parts, pixels, tower_clip)
    _assert_close(tokens, expected)
    # The switch: the checkpoint's CLIP wherever it sits.
    model = mgm.load(release, clip_weights="checkpoint")
    tokens, expected = _tokens(model, parts, pixels, parts["clip_vision"])
    _assert_close(tokens, expected)
    other, _ = _tokens(mgm.load(release), parts, pixels, tower_clip)
    assert (tokens - other).abs().max() > 1e-2  # the two CLIPs give different tokens


def test_clip_keys_beside_mining_keys_come_from_the_checkpoint(tmp_path):
    """A shard holding vlm_uni keys is read: its CLIP weights replace the tower's."""
    release, parts, _ = write_release(tmp_path)
    reshard(release, clip_beside_mining)
    pixels = torch.randn(1, 3, 64, 64)
    tokens, expected = _tokens(mgm.load(release), parts, pixels, parts["clip_vision"])
    _assert_close(tokens, expected)


def test_clip_split_between_read_and_skipped_shards_is_named(tmp_path):
    release, _, _ = write_release(tmp_path)
    keys = load_file(str(release / mgm.SINGLE_FILE))
    first_clip = sorted(k for k in keys if ".vision_tower." in k)[0]
    reshard(release, lambda k: "model-uni.safetensors" if k == first_clip else by_module(k))
    with pytest.raises(mgm.MGMFormatError) as err:
        mgm.load(release)
    message = str(err.value)
    assert "['model-clip.safetensors']" in message and "CLIP" in message
    assert "clip_weights='checkpoint'" in message and "clip_weights='tower'" in message
    assert mgm.load(release, clip_weights="checkpoint") is not None


def test_convnext_weights_only_with_optimize_vision_tower_aux(tmp_path):
    """Without the flag the tower directory's ConvNeXt is used, whatever the checkpoint holds;
    with it, the checkpoint's stem only when its shard is read."""
    extra_stem = {}
    release, parts, state = write_release(tmp_path, config={"optimize_vision_tower_aux": True})
    for key in state:
        if key.startswith("model.vision_tower_aux.vision_stem."):
            extra_stem[key] = state[key] + 0.5  # the checkpoint's stem differs from the tower's
    with torch.no_grad():
        stem = parts["stem"]
        tower_stem = {k: v.clone() for k, v in stem.state_dict().items()}
    single = load_file(str(release / mgm.SINGLE_FILE))
    single.update(extra_stem)
    save_file(single, str(release / mgm.SINGLE_FILE), metadata={"format": "pt"})
    pixels = torch.randn(1, 3, 64, 64)

    stem.load_state_dict({k.split("vision_stem.")[1]: v for k, v in extra_stem.items()})
    tokens, expected = _tokens(mgm.load(release), parts, pixels, parts["clip_vision"])
    _assert_close(tokens, expected)  # a single file is read whole: the checkpoint's stem

    reshard(release, clip_beside_mining)  # the stem alone in a shard the official loader skips
    stem.load_state_dict(tower_stem)
    tokens, expected = _tokens(mgm.load(release), parts, pixels, parts["clip_vision"])
    _assert_close(tokens, expected)
    model = mgm.load(release, clip_weights="checkpoint")
    stem.load_state_dict({k.split("vision_stem.")[1]: v for k, v in extra_stem.items()})
    tokens, expected = _tokens(model, parts, pixels, parts["clip_vision"])
    _assert_close(tokens, expected)


def test_bad_clip_weights_is_named(tmp_path):
    release, _, _ = write_release(tmp_path)
    with pytest.raises(mgm.MGMFormatError, match="clip_weights must be one of .* got 'hub'"):
        mgm.load(release, clip_weights="hub")


def test_hr_tower_is_deterministic_and_the_documented_recipe_is_not():
    """vlmkit runs the ConvNeXt in eval mode; docs/mgm-weights.md's recipe (timm DropPath modules
    in training mode, as the official code leaves its tower) makes outputs vary per run."""
    from timm.layers import DropPath

    import vlmkit

    torch.manual_seed(0)
    model = vlmkit.build("mgm-tiny").eval()
    blocks = [block for stage in model.hr_encoder.vision_stages for block in stage.blocks]
    with torch.no_grad():
        for block in blocks:
            block.gamma.fill_(1.0)  # trained-like layer scales (the tiny init is 1e-6)
        pixels = torch.randn(1, 3, 128, 128)
        first = model.encode_images(pixels)
        assert torch.equal(model.encode_images(pixels), first)
        for block, rate in zip(blocks, torch.linspace(0, 0.1, len(blocks)).tolist()):
            block.drop_path = DropPath(rate)
        torch.manual_seed(1)
        runs = [model.encode_images(pixels) for _ in range(4)]
    assert any((run - first).abs().max() > 1e-3 * first.abs().max() for run in runs)
