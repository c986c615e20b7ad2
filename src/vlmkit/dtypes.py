"""The floating-point dtypes vlmkit accepts by name, in one place.

Configs and command lines name dtypes as strings (``"bfloat16"``); :data:`DTYPES` maps each name
to its ``torch.dtype`` and :func:`resolve_dtype` accepts either form.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``dtype`` as a ``torch.dtype``: a name from :data:`DTYPES` or one of their dtypes; anything
    else raises ``ValueError`` listing the names."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
