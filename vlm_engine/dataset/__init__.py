"""Versioned, leak-free chart/text datasets built from bars (HF DatasetDict + Parquet + manifest)."""

from __future__ import annotations

from vlm_engine.dataset.bars import load_bars, normalize_bars, symbol_windows, window_at
from vlm_engine.dataset.builder import (
    DatasetConfig,
    Manifest,
    SourceInfo,
    SplitConfig,
    build_dataset,
    plan_samples,
    read_manifest,
)
from vlm_engine.dataset.errors import BarsInputError, DatasetError, ValidationError

__all__ = [
    "BarsInputError",
    "DatasetConfig",
    "DatasetError",
    "Manifest",
    "SourceInfo",
    "SplitConfig",
    "ValidationError",
    "build_dataset",
    "load_bars",
    "normalize_bars",
    "plan_samples",
    "read_manifest",
    "symbol_windows",
    "window_at",
]
