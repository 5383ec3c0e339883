"""CLIP for charts: the model (compact default or pretrained), its data and its training loop."""

from __future__ import annotations

from vlm_engine.clip.data import (
    NO_PATTERN,
    ClipSamples,
    PromptSet,
    default_prompts,
    load_dataset_dir,
)
from vlm_engine.clip.errors import ClipDataError, ClipError
from vlm_engine.clip.model import (
    ClipModelConfig,
    ClipParts,
    build_compact_clip,
    load_clip,
    train_tokenizer,
)

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
