"""vlmkit: swappable vision-language-model components.

Public names only; see ``DESIGN.md`` for the contract.
"""

from vlmkit.hookspecs import hookimpl
from vlmkit.plugins import plugin_failures
from vlmkit.registry import KINDS, available, create, register

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "register",
    "create",
    "available",
    "plugin_failures",
    "hookimpl",
]
