"""LLM backbones (kind ``llm``): the causal language model that reads the visual tokens.

- :mod:`vlmkit.llms.hf`: ``hf-causal-lm``, any Hugging Face causal LM (from a directory, a hub id,
  a GGUF file or an architecture config);
- :mod:`vlmkit.llms._tokenizers`: tokenizers built without files (the byte-level one of tiny
  models).
"""
