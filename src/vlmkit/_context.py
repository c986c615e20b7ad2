"""Build-time switches shared by components: whether to load pretrained weights.

``vlmkit.build(config, device="meta")`` builds the architecture only (for summaries and fit checks
on the real sizes); components consult :func:`should_load_pretrained` before reading weight files.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_load_pretrained: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "vlmkit_load_pretrained", default=True
)


def should_load_pretrained() -> bool:
    """False inside :func:`no_pretrained` (e.g. when building on the meta device)."""
    return _load_pretrained.get()


@contextlib.contextmanager
def no_pretrained() -> Iterator[None]:
    """Within this block components build their architecture from config and load no weights."""
    token = _load_pretrained.set(False)
    try:
        yield
    finally:
        _load_pretrained.reset(token)
