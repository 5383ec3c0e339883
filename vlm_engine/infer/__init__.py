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
from vlm_engine.infer.errors import ExportRefused, RuntimeUnavailable
from vlm_engine.infer.runtime_choice import RuntimeChoice, choose_engine, load_engine

__all__ = [
    "ChartEngine",
    "ClipBatch",
    "ClipScores",
    "ExportRefused",
    "InferenceConfig",
    "InferenceEngine",
    "RuntimeChoice",
    "RuntimeUnavailable",
    "choose_engine",
    "load_engine",
    "resolve_device",
]
