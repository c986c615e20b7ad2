"""Import of official Mini-Gemini (MGM) release directories.

An MGM release holds ``config.json`` (an HF LLM config plus MGM's ``mm_*`` / ``image_*`` fields,
``architectures`` such as ``MGMLlamaForCausalLM`` or the older ``MiniGeminiLlamaForCausalLM``), the
tokenizer, and safetensors weights (one ``model.safetensors`` or shards with
``model.safetensors.index.json``). The towers are named by path: ``mm_vision_tower`` (an HF CLIP
directory or hub id) and ``mm_vision_tower_aux`` (an open_clip ConvNeXt directory with
``open_clip_config.json``; its ``open_clip_pytorch_model.bin`` is a pickle, read with
``torch.load(weights_only=True)``).

:func:`load` rebuilds the same computation as a :class:`~vlmkit.model.VisionLanguageModel`:
``hf-clip-vit`` + ``openclip-convnext`` + ``patch_info_mining`` + the MGM projector + the LLM
(loaded by transformers from the release directory, so its own key conversions apply). Which
tower weights come from the checkpoint follows the official loader
(:mod:`vlmkit.compat._mgm_rules`): by default the CLIP weights are taken only from the shards
it reads, the ConvNeXt weights only when ``optimize_vision_tower_aux`` is set; ``clip_weights=``
chooses otherwise. LLaMA-family sentencepiece tokenizers are read with transformers 4's slow
semantics, as MGM reads them, and prompts with several images are labelled ``Image 1:<image>``
as MGM's CLI labels them.
:func:`convert_state_dict` maps MGM key
names to vlmkit's; a key it cannot place, or one whose shape differs from the model's, is an error
that names it. Nothing is run from the release directory (``trust_remote_code`` stays off unless
passed).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers.utils import logging as transformers_logging

from vlmkit._files import UnsafePathError, inside, read_json
from vlmkit._prompt import MGM_IMAGE_LABEL
from vlmkit.compat._mgm_rules import (
    CLIP_WEIGHTS,
    MGMFormatError,
    checkpoint_vision_keys,
    tokenizer_settings,
)
from vlmkit.dtypes import DTYPES

CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# MGM's class names (old and new) and model types -> the HF model type of the LLM inside.
_ARCHITECTURE = re.compile(r"^(?:MGM|MiniGemini)(Llama|Gemma|Mistral|Mixtral)ForCausalLM$")
_MODEL_TYPES = {
    "mgm": "llama", "mini_gemini": "llama",
    "mgm_gemma": "gemma", "mini_gemini_gemma": "gemma",
    "mgm_mistral": "mistral", "mini_gemini_mistral": "mistral",
    "mgm_mixtral": "mixtral", "mini_gemini_mixtral": "mixtral",
}  # fmt: skip
# Config fields that describe MGM's vision side or training, not the LLM.
_MGM_FIELDS = {
    "architectures", "model_type", "_name_or_path", "transformers_version", "use_mm_proj",
    "model_path", "drop_path", "freeze_mm_mlp_adapter", "tune_mm_mlp_adapter",
    "unfreeze_mm_vision_tower", "optimize_vision_tower", "optimize_vision_tower_aux",
}  # fmt: skip
_MGM_PREFIXES = ("mm_", "image_", "tokenizer_")
# Where official configs point (paths on the authors' machines) -> hub ids of the same towers.
KNOWN_TOWERS = {
    "clip-vit-large-patch14-336": "openai/clip-vit-large-patch14-336",
    "openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup": (
        "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
    ),
}

# MGM key -> vlmkit key, for every module MGM adds to the LLM (docs/architecture.md, "Checkpoint format").
_VISION_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^model\.vision_tower\.vision_tower\.vision_model\.(.+)$"),
        "lr_encoder.vision_tower.{clip}{0}",
    ),
    (re.compile(r"^model\.vision_tower_aux\.(vision_stem\..+)$"), "hr_encoder.{0}"),
    (re.compile(r"^model\.vision_tower_aux\.(vision_stages\.[0-3]\..+)$"), "hr_encoder.{0}"),
    (re.compile(r"^model\.mm_projector\.(\d+\.(?:weight|bias))$"), "projector.{0}"),
    (
        re.compile(r"^model\.(vlm_uni_(?:query|aux|val)_projector\.[01]\.(?:weight|bias))$"),
        "miner.{0}",
    ),
)  # fmt: skip
_MGM_MODULES = re.compile(r"^model\.(vision_tower|vision_tower_aux|mm_projector|vlm_uni_\w+)\.")
_LLM_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(model\..+)$"), "llm.model.{0}"),
    (re.compile(r"^(lm_head\..+)$"), "llm.model.{0}"),
)


@functools.lru_cache(maxsize=1)
def _clip_prefix() -> str:
    """``"vision_model."`` where this transformers keeps that level in ``CLIPVisionModel``, else
    ``""``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
        image_size=8, patch_size=8,
    )  # fmt: skip
    with torch.device("meta"):
        keys = CLIPVisionModel(config).state_dict().keys()
    return "vision_model." if any(k.startswith("vision_model.") for k in keys) else ""


def convert_key(key: str) -> str:
    """The vlmkit name of one MGM state-dict key; :class:`MGMFormatError` names a key it cannot map.

    LLM keys keep the HF checkpoint naming under ``llm.model.`` (transformers applies its own key
    conversions, e.g. fused MoE experts, when it loads them).
    """
    for pattern, target in _VISION_RULES:
        match = pattern.match(key)
        if match:
            return target.format(*match.groups(), clip=_clip_prefix())
    if _MGM_MODULES.match(key):
        raise MGMFormatError(
            f"unmapped MGM key {key!r}: expected model.vision_tower.vision_tower.vision_model.*, "
            "model.vision_tower_aux.{vision_stem,vision_stages.0-3}.*, "
            "model.mm_projector.<i>.{weight,bias} or "
            "model.vlm_uni_{query,aux,val}_projector.{0,1}.{weight,bias}"
        )
    for pattern, target in _LLM_RULES:
        match = pattern.match(key)
        if match:
            return target.format(*match.groups())
    raise MGMFormatError(f"unmapped MGM key {key!r}: expected 'model.*' or 'lm_head.*'")


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    expected: Mapping[str, torch.Tensor] | nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """MGM key names -> vlmkit key names (tensors unchanged).

    ``expected``: a vlmkit model or its state dict; when given, every converted key must exist there
    with the same shape. Every key that cannot be placed is listed in one :class:`MGMFormatError`.
    """
    if isinstance(expected, nn.Module):
        expected = expected.state_dict()
    converted: dict[str, torch.Tensor] = {}
    errors: list[str] = []
    for key, tensor in state_dict.items():
        try:
            new = convert_key(key)
        except MGMFormatError as err:
            errors.append(str(err))
            continue
        if expected is not None:
            problem = _shape_problem(key, new, tuple(tensor.shape), expected)
            if problem:
                errors.append(problem)
                continue
        converted[new] = tensor
    if errors:
        raise MGMFormatError("cannot convert the MGM state dict:\n  - " + "\n  - ".join(errors))
    return converted


def _shape_problem(
    key: str, new: str, shape: tuple[int, ...], expected: Mapping[str, torch.Tensor]
) -> str | None:
    if new not in expected:
        return f"MGM key {key!r} maps to {new!r}, which the model does not have"
    want = tuple(expected[new].shape)
    if want != shape:
        return f"MGM key {key!r} has shape {shape} but the model's {new!r} has shape {want}"
    return None


# ---------------------------------------------------------------------------- the release directory
def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of an MGM release; :class:`MGMFormatError` when it is not one."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise MGMFormatError(f"{path} is not an MGM release directory: {CONFIG_NAME} is missing")
    try:
        config = read_json(file)
    except ValueError as err:
        raise MGMFormatError(str(err)) from None
    if not isinstance(config, dict):
        raise MGMFormatError(f"{file}: expected a JSON object, got {type(config).__name__}")
    if "mm_vision_tower" not in config:
        raise MGMFormatError(
            f"{file} has no 'mm_vision_tower': not a Mini-Gemini config "
            f"(architectures={config.get('architectures')!r})"
        )
    return config


def llm_type(config: Mapping[str, Any]) -> str:
    """The HF model type of an MGM config's LLM (from ``architectures``, else ``model_type``)."""
    for name in config.get("architectures") or []:
        match = _ARCHITECTURE.match(name)
        if match:
            return match.group(1).lower()
    model_type = config.get("model_type")
    if model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    raise MGMFormatError(
        f"cannot tell the LLM of this MGM config: architectures={config.get('architectures')!r}, "
        f"model_type={model_type!r}; expected MGM<Llama|Gemma|Mistral|Mixtral>ForCausalLM "
        f"(or MiniGemini...) or a model_type in {sorted(_MODEL_TYPES)}"
    )


def weight_files(path: str | Path) -> dict[str, Path]:
    """``{key: file}`` of a release's safetensors weights (index with shards, or one file)."""
    path = Path(path)
    index = path / INDEX_FILE
    if index.is_file():
        try:
            data = read_json(index)
        except ValueError as err:
            raise MGMFormatError(str(err)) from None
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise MGMFormatError(f"{index} has no 'weight_map'")
        try:
            files = {key: inside(path, name, source=index) for key, name in weight_map.items()}
        except UnsafePathError as err:
            raise MGMFormatError(str(err)) from None
        absent = sorted({str(f.name) for f in files.values() if not f.is_file()})
        if absent:
            raise MGMFormatError(f"{index} names shard(s) that are missing: {absent}")
        return files
    single = path / SINGLE_FILE
    if single.is_file():
        with _open_safetensors(single) as handle:
            return {key: single for key in handle.keys()}
    raise MGMFormatError(
        f"{path}: no {SINGLE_FILE} or {INDEX_FILE} (vlmkit reads MGM weights from safetensors only)"
    )


def _open_safetensors(file: Path) -> Any:
    try:
        return safe_open(str(file), framework="pt")
    except SafetensorError as err:
        raise MGMFormatError(f"{file} is not a readable safetensors file ({err})") from None


def _read_tensors(files: Mapping[str, Path], keys: list[str]) -> dict[str, torch.Tensor]:
    by_file: dict[Path, list[str]] = {}
    for key in keys:
        by_file.setdefault(files[key], []).append(key)
    tensors = {}
    for file, names in by_file.items():
        with _open_safetensors(file) as handle:
            tensors.update({name: handle.get_tensor(name) for name in names})
    return tensors


def _tower_path(value: str | None, override: str | None, root: Path, field: str) -> str:
    """A tower path as given if it exists, else relative to the release, else a hub id."""
    if override is not None:
        return str(override)
    if not value:
        raise MGMFormatError(f"config.json has no {field!r}")
    for candidate in (Path(value), root / value):
        if candidate.is_dir():
            return str(candidate)
    name = Path(value.rstrip("/")).name
    if name in KNOWN_TOWERS:
        return KNOWN_TOWERS[name]
    if value.count("/") == 1 and not value.startswith((".", "/")):
        return value  # a hub id
    raise MGMFormatError(
        f"{field}={value!r} is neither a directory nor a hub id; pass its location to load() "
        f"({'vision_tower' if field == 'mm_vision_tower' else 'vision_tower_aux'}=...)"
    )


def _projector(kind: str) -> dict[str, Any]:
    if kind == "linear":
        return {"name": "linear"}
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind or "")
    if match:
        return {"name": "mlp2x_gelu", "depth": int(match.group(1))}
    raise MGMFormatError(
        f"mm_projector_type={kind!r} is not supported; expected 'linear' or 'mlp<N>x_gelu'"
    )


def _chat_template(llm: str, llm_config: Mapping[str, Any]) -> str:
    """MGM's conversation mode for a backbone (the release does not record it)."""
    if llm == "gemma":
        return "gemma"
    if llm in ("mistral", "mixtral"):
        return "mistral_instruct"
    vocab = llm_config.get("vocab_size")
    if vocab == 128256:  # Llama-3
        return "llama_3"
    if vocab == 64000:  # Yi-34B (Nous-Hermes-2)
        return "chatml_direct"
    return "vicuna_v1"


_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def vlmkit_config(
    path: str | Path,
    *,
    vision_tower: str | None = None,
    vision_tower_aux: str | None = None,
    chat_template: str | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """The vlmkit config (a dict for :func:`vlmkit.build`) of an MGM release directory."""
    root = Path(path)
    mgm = read_config(root)
    if mgm.get("mm_use_im_start_end"):
        raise MGMFormatError(
            "mm_use_im_start_end=True is not supported (image start/end tokens); expected False"
        )
    llm = llm_type(mgm)
    llm_config = {
        key: value
        for key, value in mgm.items()
        if key not in _MGM_FIELDS and not key.startswith(_MGM_PREFIXES)
    }
    declared = llm_config.pop("torch_dtype", None) or llm_config.pop("dtype", None) or "float32"
    if dtype is None:
        dtype = declared
    dtype = _DTYPE_NAMES.get(dtype, dtype) if isinstance(dtype, torch.dtype) else dtype
    if dtype not in _DTYPE_NAMES.values():
        raise MGMFormatError(f"dtype must be one of {sorted(_DTYPE_NAMES.values())}, got {dtype!r}")
    lr_encoder = {
        "name": "hf-clip-vit",
        "pretrained": _tower_path(
            mgm.get("mm_vision_tower"), vision_tower, root, "mm_vision_tower"
        ),
        "select_layer": int(mgm.get("mm_vision_select_layer", -2)),
        "select_feature": mgm.get("mm_vision_select_feature", "patch"),
    }
    config: dict[str, Any] = {
        "name": root.name,
        "description": f"Mini-Gemini release {root.name} ({mgm.get('architectures')})",
        "lr_encoder": lr_encoder,
        "projector": _projector(mgm.get("mm_projector_type", "linear")),
        "llm": {
            "name": "hf-causal-lm",
            "pretrained": str(root),
            "config": {"model_type": llm, **llm_config},
            "dtype": dtype,
            "trust_remote_code": trust_remote_code,
            **tokenizer_settings(root, llm),
        },
        "image_aspect_ratio": "pad" if mgm.get("image_aspect_ratio") == "pad" else "crop",
        "image_grid": int(mgm.get("image_grid", 1)),
        "image_global": bool(mgm.get("image_global", False)),
        "chat_template": chat_template or _chat_template(llm, llm_config),
        "image_label": MGM_IMAGE_LABEL,
    }
    lr_dim = int(mgm["mm_hidden_size"]) if "mm_hidden_size" in mgm else None
    aux = mgm.get("mm_vision_tower_aux")
    if aux or vision_tower_aux:
        config["hr_encoder"] = {
            "name": "openclip-convnext",
            "pretrained": _tower_path(aux, vision_tower_aux, root, "mm_vision_tower_aux"),
            "image_size": int(mgm.get("image_size_aux", 320)),
        }
        config["miner"] = {"name": "patch_info_mining"}
        if lr_dim is not None:
            config["miner"]["lr_dim"] = lr_dim
        if "mm_hidden_size_aux" in mgm:
            config["miner"]["hr_dim"] = int(mgm["mm_hidden_size_aux"])
    else:
        config["miner"] = {"name": "identity"}
        if lr_dim is not None:
            config["projector"]["in_dim"] = lr_dim
    return config


def load(
    path: str | Path,
    *,
    vision_tower: str | None = None,
    vision_tower_aux: str | None = None,
    chat_template: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    clip_weights: str = "official",
) -> Any:
    """An MGM release directory as a :class:`~vlmkit.model.VisionLanguageModel` (eval mode).

    ``vision_tower`` / ``vision_tower_aux`` replace the tower paths of ``config.json`` (official
    configs name directories on the authors' machines); ``chat_template`` replaces the one inferred
    from the backbone; ``dtype`` defaults to the release's ``torch_dtype``. Every MGM weight is
    checked by name and shape before the weights are loaded.

    ``clip_weights``: ``"official"`` (default) takes the checkpoint's CLIP weights when the
    official loader does, i.e. when they sit in the shards it reads (those holding ``vlm_uni`` /
    ``vision_fpn`` / ``vision_stages`` keys), and the tower directory's otherwise;
    ``"checkpoint"`` takes the checkpoint's wherever they sit; ``"tower"`` keeps the tower
    directory's. The ConvNeXt weights come from the checkpoint only with
    ``optimize_vision_tower_aux`` (with ``"official"``, only from the shards read).
    """
    if clip_weights not in CLIP_WEIGHTS:
        raise MGMFormatError(
            f"clip_weights must be one of {list(CLIP_WEIGHTS)}, got {clip_weights!r}"
        )
    from vlmkit.model import build

    root = Path(path)
    config = vlmkit_config(
        root,
        vision_tower=vision_tower,
        vision_tower_aux=vision_tower_aux,
        chat_template=chat_template,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    mgm = read_config(root)
    files = weight_files(root)
    vision_keys = [key for key in files if _MGM_MODULES.match(key)]
    skeleton = build(config, device="meta").state_dict()
    shapes = {}
    for key in vision_keys:
        with _open_safetensors(files[key]) as handle:
            shapes[key] = torch.empty(handle.get_slice(key).get_shape(), device="meta")
    convert_state_dict(shapes, expected=skeleton)  # names and shapes, before any weight is read
    wanted = checkpoint_vision_keys(
        files, vision_keys, clip_weights=clip_weights,
        optimize_aux=bool(mgm.get("optimize_vision_tower_aux", False)),
    )  # fmt: skip

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its load report lists every MGM vision key
    try:
        model = build(config)
    finally:
        transformers_logging.set_verbosity(verbosity)
    _check_llm(model.llm, [key for key in files if key not in set(vision_keys)])
    state = convert_state_dict(_read_tensors(files, wanted), expected=model.state_dict())
    own = model.state_dict()
    required = [k for k in own if k.startswith(("miner.", "projector."))]
    missing = sorted(set(required) - set(state))
    if missing:
        raise MGMFormatError(f"{root}: the release lacks weight(s) for {missing[:10]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    _apply_tokenizer_fields(model, mgm)
    model.to(dtype=DTYPES[config["llm"]["dtype"]])
    if device is not None:
        model.to(device)
    return model.eval()


def _check_llm(llm: Any, llm_keys: list[str]) -> None:
    """Every LLM key of the release was used by transformers, and no LLM weight is missing."""
    for key in llm_keys:
        convert_key(key)  # 'model.*' / 'lm_head.*' only
    info = getattr(llm, "loading_info", None) or {}
    mgm_modules = {k for k in info.get("unexpected_keys", ()) if _MGM_MODULES.match(k)}
    unexpected = sorted(set(info.get("unexpected_keys", ())) - mgm_modules)
    missing = sorted(info.get("missing_keys", ()))
    mismatched = sorted(str(m) for m in info.get("mismatched_keys", ()))
    problems = []
    if unexpected:
        problems.append(f"unmapped LLM key(s) {unexpected[:10]}")
    if missing:
        problems.append(f"LLM weight(s) missing from the release: {missing[:10]}")
    if mismatched:
        problems.append(f"LLM weight(s) with another shape: {mismatched[:10]}")
    if problems:
        raise MGMFormatError(
            "the release's LLM weights do not fit its config: " + "; ".join(problems)
        )


def _apply_tokenizer_fields(model: Any, mgm: Mapping[str, Any]) -> None:
    tokenizer = model.llm.tokenizer
    if mgm.get("tokenizer_model_max_length"):
        tokenizer.model_max_length = int(mgm["tokenizer_model_max_length"])
    if mgm.get("tokenizer_padding_side"):
        side = mgm["tokenizer_padding_side"]
        if side not in ("left", "right"):
            raise MGMFormatError(f"tokenizer_padding_side must be 'left' or 'right', got {side!r}")
        tokenizer.padding_side = side


__all__ = [
    "load", "convert_state_dict", "convert_key", "vlmkit_config", "read_config", "MGMFormatError"
]  # fmt: skip
