"""Serving CLIP: the warm inference engine, hot-swap and shadow mode."""

from __future__ import annotations

from vlm_engine.infer.engine import (
    ChartEngine,
    ClipBatch,
    ClipScores,
    InferenceConfig,
    InferenceEngine,
    resolve_device,
)
from vlm_engine.infer.errors import RuntimeUnavailable
from vlm_engine.infer.runtime_choice import RuntimeChoice, choose_engine, load_engine
from vlm_engine.infer.server import ModelServer, Served, ShadowStats, SwapResult

__all__ = [
    "ChartEngine",
    "ClipBatch",
    "ClipScores",
    "InferenceConfig",
    "InferenceEngine",
    "ModelServer",
    "RuntimeChoice",
    "RuntimeUnavailable",
    "Served",
    "ShadowStats",
    "SwapResult",
    "choose_engine",
    "load_engine",
    "resolve_device",
]
