"""Evaluation and calibration of CLIP outputs: metrics, temperature and Platt scaling, reliability diagrams."""

from __future__ import annotations

from vlm_engine.calibrate.params import Calibration, FoldStats

__all__ = ["Calibration", "FoldStats"]
