"""Serving CLIP: the warm inference engine, hot-swap and shadow mode."""

from __future__ import annotations

from vlm_engine.infer.engine import (
    ClipBatch,
    ClipScores,
    InferenceConfig,
    InferenceEngine,
    resolve_device,
)
from vlm_engine.infer.server import ModelServer, Served, ShadowStats, SwapResult

__all__ = [
    "ClipBatch",
    "ClipScores",
    "InferenceConfig",
    "InferenceEngine",
    "ModelServer",
    "Served",
    "ShadowStats",
    "SwapResult",
    "resolve_device",
]
