"""Checking a config value against the type annotation of the keyword it is given for.

Component keyword arguments come from YAML/JSON, so their values are ``None``, bools, numbers,
strings, lists and mappings. An annotation such as ``dict[str, Any] | None`` or
``tuple[int, ...]`` is read (as text, or as a type) into those plain kinds; a value of another
kind is named before the component sees it (a ``str`` keyword also takes a ``pathlib.Path``). Annotations this cannot read (a class, a protocol)
accept any value.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

# Annotation head -> how an error names it.
_WORDS = {"None": "None", "bool": "True or False", "int": "an integer", "float": "a number",
          "str": "a string", "dict": "a mapping", "Mapping": "a mapping", "list": "a list",
          "tuple": "a list", "Sequence": "a list"}
# Annotation head -> predicate on a config value.
_KINDS: dict[str, Any] = {
    "None": lambda v: v is None,
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, (str, os.PathLike)),
    "dict": lambda v: isinstance(v, Mapping),
    "Mapping": lambda v: isinstance(v, Mapping),
    "list": lambda v: isinstance(v, (list, tuple)),
    "tuple": lambda v: isinstance(v, (list, tuple)),
    "Sequence": lambda v: isinstance(v, (list, tuple)),
}


def _alternatives(annotation: str) -> list[str]:
    """Top-level ``|`` parts of an annotation, each reduced to its head (``dict[str, Any]`` ->
    ``dict``); ``Optional[X]`` adds ``None``."""
    parts, depth, current = [], 0, ""
    for char in annotation:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    heads = []
    for part in (p.strip() for p in parts):
        head = part.split("[", 1)[0].strip().rsplit(".", 1)[-1]
        if head == "Optional":
            heads += ["None", *_alternatives(part[part.index("[") + 1 : -1])]
        else:
            heads.append(head)
    return heads


def type_problem(value: Any, annotation: Any) -> str | None:
    """``None`` when ``value`` fits ``annotation`` (or the annotation is not readable), else the
    expected kinds in words, e.g. ``"a mapping or None"``."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    if not text or text == "Any":
        return None
    heads = _alternatives(text)
    if not all(head in _KINDS for head in heads):
        return None
    if any(_KINDS[head](value) for head in heads):
        return None
    words = list(dict.fromkeys(_WORDS[head] for head in heads))
    return " or ".join(words)
