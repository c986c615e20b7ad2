"""``vlmkit.compat.mgm``: tiny MGM-format releases written here, loaded, and compared with MGM's
computation restated in ``tests/_mgm.py`` on the same weights; key mapping and its errors."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch
from open_clip.model import CLIP
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, LlamaConfig
from transformers import LlamaForCausalLM
from transformers.utils import logging as hf_logging

import vlmkit
from tests import _mgm
from vlmkit.compat import mgm
from vlmkit.encoders.convnext import OpenCLIPConvNeXtEncoder
from vlmkit.llms._tokenizers import byte_level_tokenizer

CLIP_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "image_size": 32, "patch_size": 8}  # fmt: skip
CONVNEXT_CFG = OpenCLIPConvNeXtEncoder.tiny_config["model_cfg"]  # 24+32+48+64 = 168 channels
LLAMA_TINY = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 260,
              "max_position_embeddings": 512, "bos_token_id": 1, "eos_token_id": 2,
              "pad_token_id": 3}  # fmt: skip


def _projection(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


def write_release(
    root, *, architecture="MGMLlamaForCausalLM", model_type="mgm", shards=False, grid=1,
    image_global=False, hr_size=64, extra=None, drop=(), config=None,
):  # fmt: skip
    """An MGM release under ``root / "release"`` plus its two tower directories; returns the
    modules holding the weights MGM would compute with."""
    clip_dir = root / "clip-vit-tiny"
    tower = CLIPModel(CLIPConfig(
        vision_config=CLIP_TINY, projection_dim=8,
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2},
    ))  # fmt: skip
    tower.save_pretrained(clip_dir)
    release = root / "release"
    aux_dir = release / "model_zoo" / "openclip-convnext-tiny"  # found relative to the release
    aux_dir.mkdir(parents=True)
    open_clip_model = _mgm.randomise(CLIP(**CONVNEXT_CFG)).eval()
    (aux_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONVNEXT_CFG}))
    torch.save(open_clip_model.state_dict(), aux_dir / "open_clip_pytorch_model.bin")

    parts = {
        # MGM replaces the tower directory's CLIP weights by the release's: use other ones.
        "clip_vision": _mgm.randomise(CLIPVisionModel(CLIPVisionConfig(**CLIP_TINY))).eval(),
        "stem": open_clip_model.visual.trunk.stem,
        "stages": open_clip_model.visual.trunk.stages,
        "query": _mgm.randomise(_projection(32, 32)),
        "key": _mgm.randomise(_projection(168, 32)),
        "value": _mgm.randomise(_projection(168, 32)),
        "projector": _mgm.randomise(nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 48))),
        "llm": LlamaForCausalLM(LlamaConfig(**LLAMA_TINY)).eval(),
    }
    state = dict(parts["llm"].state_dict())
    for name, tensor in parts["clip_vision"].state_dict().items():
        name = name.removeprefix("vision_model.")
        state[f"model.vision_tower.vision_tower.vision_model.{name}"] = tensor
    for name, tensor in parts["stem"].state_dict().items():
        state[f"model.vision_tower_aux.vision_stem.{name}"] = tensor
    for name, tensor in parts["stages"].state_dict().items():
        state[f"model.vision_tower_aux.vision_stages.{name}"] = tensor
    for module, name in (("query", "query"), ("key", "aux"), ("value", "val")):
        for key, tensor in parts[module].state_dict().items():
            state[f"model.vlm_uni_{name}_projector.{key}"] = tensor
    for key, tensor in parts["projector"].state_dict().items():
        state[f"model.mm_projector.{key}"] = tensor
    state.update(extra or {})
    for key in drop:
        del state[key]
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    if shards:
        keys = sorted(state)
        halves = {"model-00001-of-00002.safetensors": keys[::2],
                  "model-00002-of-00002.safetensors": keys[1::2]}  # fmt: skip
        for file, names in halves.items():
            save_file({k: state[k] for k in names}, str(release / file), metadata={"format": "pt"})
        weight_map = {k: f for f, names in halves.items() for k in names}
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (release / mgm.INDEX_FILE).write_text(json.dumps(index))
    else:
        save_file(state, str(release / mgm.SINGLE_FILE), metadata={"format": "pt"})
    byte_level_tokenizer().save_pretrained(str(release))
    fields = {
        **LLAMA_TINY, "architectures": [architecture], "model_type": model_type,
        "torch_dtype": "float32", "mm_vision_tower": str(clip_dir),
        "mm_vision_tower_aux": "model_zoo/openclip-convnext-tiny", "mm_hidden_size": 32,
        "mm_hidden_size_aux": 168, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "image_size_aux": hr_size, "image_grid": grid, "image_global": image_global,
        "image_aspect_ratio": "pad", "tokenizer_model_max_length": 300,
        "tokenizer_padding_side": "right", "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "optimize_vision_tower_aux": False, "use_mm_proj": True,
    }  # fmt: skip
    fields.update(config or {})
    (release / "config.json").write_text(json.dumps(fields))
    return release, parts, state


@pytest.mark.parametrize(
    "architecture, model_type, shards, grid, image_global, hr_size",
    [
        ("MGMLlamaForCausalLM", "mgm", False, 1, False, 64),
        ("MiniGeminiLlamaForCausalLM", "mini_gemini", True, 1, False, 64),  # old names, shards
        ("MGMLlamaForCausalLM", "mgm", True, 2, True, 128),  # HD: 4 crops + a global view
    ],
)
def test_load_equals_the_mgm_computation(
    tmp_path, architecture, model_type, shards, grid, image_global, hr_size
):
    release, parts, _ = write_release(
        tmp_path, architecture=architecture, model_type=model_type, shards=shards, grid=grid,
        image_global=image_global, hr_size=hr_size,
    )  # fmt: skip
    model = vlmkit.compat.mgm.load(release)
    views = grid * grid + int(image_global)
    assert model.num_visual_tokens == 16 * views
    assert model.config.chat_template == "vicuna_v1"
    assert model.config.llm.kwargs["trust_remote_code"] is False
    assert model.llm.tokenizer.model_max_length == 300

    pixels = torch.randn(2, 3, hr_size, hr_size)
    with torch.no_grad():
        expected = _mgm.visual_tokens(
            pixels, lr_size=32, grid=grid, image_global=image_global,
            **{k: v for k, v in parts.items() if k != "llm"},
        )  # fmt: skip
        tokens = model.encode_images(pixels)  # the default (fast) mining backend: rounding only
        atol = 1e-5 * expected.abs().max().item()
        torch.testing.assert_close(tokens, expected, rtol=0, atol=atol)
        # The literal computation: the same operations as the restatement, so equal up to the
        # summation order that BLAS picks for the thread count (a few float32 ulps of the scale).
        model.miner.backend = "reference"
        atol = 1e-6 * expected.abs().max().item()
        torch.testing.assert_close(model.encode_images(pixels), expected, rtol=0, atol=atol)

        ids = [1, 72, 105, _mgm.IMAGE_TOKEN_INDEX, 33, 10, 65, _mgm.IMAGE_TOKEN_INDEX, 66]
        logits = model(torch.tensor([ids]), images=pixels).logits
        reference = _mgm.spliced_logits(parts["llm"], ids, expected)
        assert logits.shape == (1, len(ids) - 2 + 2 * 16 * views, 260)
        torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)


def test_loading_a_release_and_its_tokenizer_warns_nothing(tmp_path):
    # Official configs carry model_type "mgm" and Llama's "rope_scaling": null; neither may reach
    # transformers' generic config loader, which warns about both on every load.
    release, _, _ = write_release(tmp_path, config={"rope_scaling": None, "rope_theta": 10000.0})
    logged: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    hf_logger = hf_logging.get_logger("transformers")
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = mgm.load(release)
            assert model.llm.tokenizer("a b").input_ids
    finally:
        hf_logger.removeHandler(handler)
    assert logged == []
    assert [str(w.message) for w in caught if "transformers" in w.filename] == []


def test_convert_state_dict_maps_every_key(tmp_path):
    release, _, state = write_release(tmp_path)
    model = mgm.load(release)
    converted = mgm.convert_state_dict(state, expected=model)
    assert len(converted) == len(state)
    own = model.state_dict()
    assert set(converted) == set(own)  # every vlmkit weight has exactly one MGM source
    for name in ("model.mm_projector.2.bias", "model.vlm_uni_aux_projector.0.weight"):
        assert torch.equal(own[mgm.convert_key(name)], state[name])
    assert mgm.convert_key("model.vlm_uni_val_projector.1.weight") == (
        "miner.vlm_uni_val_projector.1.weight"
    )
    assert mgm.convert_key("model.vision_tower_aux.vision_stages.3.blocks.0.gamma") == (
        "hr_encoder.vision_stages.3.blocks.0.gamma"
    )
    assert mgm.convert_key("lm_head.weight") == "llm.model.lm_head.weight"


@pytest.mark.parametrize(
    "key",
    [
        "model.vision_tower_aux.vision_fpn.0.weight",
        "model.vlm_uni_query_projector.2.weight",
        "model.vision_tower.vision_tower.text_model.x",
        "model.mm_projector.weight",
        "vision_tower.extra",
    ],
)
def test_unmapped_keys_are_named(key):
    with pytest.raises(mgm.MGMFormatError, match=f"unmapped MGM key '{key}'"):
        mgm.convert_state_dict({key: torch.zeros(1), "model.norm.weight": torch.zeros(1)})


def test_shape_mismatch_is_named_before_loading(tmp_path):
    release, _, _ = write_release(tmp_path, extra={"model.mm_projector.2.bias": torch.zeros(7)})
    with pytest.raises(mgm.MGMFormatError) as err:
        mgm.load(release)
    assert "'model.mm_projector.2.bias' has shape (7,)" in str(err.value)
    assert "'projector.2.bias' has shape (48,)" in str(err.value)


def test_unknown_llm_key_and_missing_weights_are_named(tmp_path):
    release, _, _ = write_release(tmp_path / "a", extra={"model.rotary.extra": torch.zeros(2)})
    with pytest.raises(mgm.MGMFormatError, match=r"unmapped LLM key\(s\) \['model.rotary.extra'\]"):
        mgm.load(release)
    release, _, _ = write_release(tmp_path / "b", drop=["model.vlm_uni_query_projector.1.bias"])
    with pytest.raises(mgm.MGMFormatError, match="miner.vlm_uni_query_projector.1.bias"):
        mgm.load(release)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"mm_use_im_start_end": True}, "mm_use_im_start_end=True"),
        ({"architectures": ["LlavaQwenForCausalLM"], "model_type": "llava"}, "LlavaQwen"),
        ({"mm_projector_type": "resampler"}, "mm_projector_type='resampler'"),
        ({"mm_vision_tower_aux": "nowhere/on/disk"}, "mm_vision_tower_aux='nowhere/on/disk'"),
        ({"mm_hidden_size_aux": 2880}, "hr_dim=2880"),
    ],
)
def test_config_errors_name_the_field(tmp_path, fields, message):
    release, _, _ = write_release(tmp_path, config=fields)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        mgm.load(release)


def test_not_a_release(tmp_path):
    with pytest.raises(mgm.MGMFormatError, match="config.json is missing"):
        mgm.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(mgm.MGMFormatError, match="no 'mm_vision_tower'"):
        mgm.load(tmp_path)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"architectures": ["MiniGeminiGemmaForCausalLM"]}, "gemma"),
        ({"architectures": ["MGMMixtralForCausalLM"]}, "mixtral"),
        ({"model_type": "mini_gemini_mistral"}, "mistral"),
        ({"architectures": ["MGMLlamaForCausalLM"], "model_type": "mgm"}, "llama"),
    ],
)
def test_llm_type_from_old_and_new_names(config, expected):
    assert mgm.llm_type(config) == expected


def test_official_tower_paths_become_hub_ids_and_fields_map(tmp_path):
    """An official-looking config (authors' paths, Gemma, HD, bf16) read without any download."""
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["MiniGeminiGemmaForCausalLM"], "model_type": "mini_gemini_gemma",
        "hidden_size": 2048, "vocab_size": 256000, "torch_dtype": "bfloat16",
        "mm_vision_tower": "model_zoo/OpenAI/clip-vit-large-patch14-336",
        "mm_vision_tower_aux": "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup",
        "mm_hidden_size": 1024, "mm_hidden_size_aux": 2880, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "image_size_aux": 1536, "image_grid": 2, "image_global": True,
        "image_aspect_ratio": "pad", "mm_use_im_start_end": False,
    }))  # fmt: skip
    config = mgm.vlmkit_config(tmp_path)
    assert config["lr_encoder"]["pretrained"] == "openai/clip-vit-large-patch14-336"
    assert config["hr_encoder"] == {
        "name": "openclip-convnext", "image_size": 1536,
        "pretrained": "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup",
    }  # fmt: skip
    assert config["miner"] == {"name": "patch_info_mining", "lr_dim": 1024, "hr_dim": 2880}
    assert config["projector"] == {"name": "mlp2x_gelu", "depth": 2}
    views = (config["image_grid"], config["image_global"], config["chat_template"])
    assert views == (2, True, "gemma")
    llm = config["llm"]
    assert llm["config"] == {"model_type": "gemma", "hidden_size": 2048, "vocab_size": 256000}
    assert (llm["dtype"], llm["pretrained"]) == ("bfloat16", str(tmp_path))
    assert llm["trust_remote_code"] is False
    override = mgm.vlmkit_config(tmp_path, dtype=torch.float32, chat_template="plain")
    assert (override["llm"]["dtype"], override["chat_template"]) == ("float32", "plain")
