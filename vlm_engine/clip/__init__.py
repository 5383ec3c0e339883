"""CLIP for charts: the model (compact default or pretrained), its data and its training loop.

The model's names (torch, transformers) load on first use, so reading a model card or a chart
dataset does not import torch: the daemon checks a bundle before it warms one (issue 16, item 4).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vlm_engine.clip.data import (
    NO_PATTERN,
    ClipSamples,
    PromptSet,
    default_prompts,
    load_dataset_dir,
)
from vlm_engine.clip.errors import ClipDataError, ClipError

if TYPE_CHECKING:
    from vlm_engine.clip.model import (
        ClipModelConfig,
        ClipParts,
        build_compact_clip,
        load_clip,
        train_tokenizer,
    )

_MODEL_NAMES = frozenset(
    ("ClipModelConfig", "ClipParts", "build_compact_clip", "load_clip", "train_tokenizer")
)


def __getattr__(name: str) -> Any:
    """The model's names from vlm_engine.clip.model, imported (with torch) when first asked for."""
    if name in _MODEL_NAMES:
        return getattr(importlib.import_module("vlm_engine.clip.model"), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "NO_PATTERN",
    "ClipDataError",
    "ClipError",
    "ClipModelConfig",
    "ClipParts",
    "ClipSamples",
    "PromptSet",
    "build_compact_clip",
    "default_prompts",
    "load_clip",
    "load_dataset_dir",
    "train_tokenizer",
]
