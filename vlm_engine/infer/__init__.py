"""Serving CLIP: the warm inference engine (the daemon's model slot swaps and shadows whole bundles)."""

from __future__ import annotations

from vlm_engine.infer.engine import (
    ClipBatch,
    ClipScores,
    InferenceConfig,
    InferenceEngine,
    resolve_device,
)

__all__ = [
    "ClipBatch",
    "ClipScores",
    "InferenceConfig",
    "InferenceEngine",
    "resolve_device",
]
