"""What a config error can add to msgspec's own message: the values an enum key accepts."""

from __future__ import annotations

import re

import msgspec
from msgspec import inspect

_PATH = re.compile(r"at `\$((?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")


def _field_type(root: type, keys: list[str]) -> inspect.Type | None:
    """The declared type at root.keys[0].keys[1]..., through optional sections; None if unknown."""
    node: inspect.Type = inspect.type_info(root)
    for key in keys:
        if isinstance(node, inspect.UnionType):  # `Section | None`: the section
            structs = [t for t in node.types if isinstance(t, inspect.StructType)]
            if len(structs) != 1:
                return None
            node = structs[0]
        if not isinstance(node, inspect.StructType):
            return None
        fields = {f.encode_name: f.type for f in node.fields}
        if key not in fields:
            return None
        node = fields[key]
    return node


def enum_hint(root: type, error: msgspec.ValidationError) -> str:
    """' (one of: a, b)' when the error is a bad value of a Literal key, else ''."""
    text = str(error)
    match = _PATH.search(text)
    if not text.startswith("Invalid enum value") or match is None:
        return ""
    node = _field_type(root, match.group(1).split(".")[1:])
    if isinstance(node, inspect.UnionType):
        literals = [t for t in node.types if isinstance(t, inspect.LiteralType)]
        node = literals[0] if len(literals) == 1 else None
    if not isinstance(node, inspect.LiteralType):
        return ""
    return f" (one of: {', '.join(str(v) for v in node.values)})"
