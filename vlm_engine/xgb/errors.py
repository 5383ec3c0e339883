"""Errors of the XGBoost component.

XgbError
 ├── XgbModelError   a model file is missing, unreadable or does not fit the features: retrain or fix the bundle
 └── XgbDataError    the training data cannot be used (too few rows, one class): bring more or other data
"""

from __future__ import annotations


class XgbError(Exception):
    """Base of every error raised by vlm_engine.xgb."""


class XgbModelError(XgbError):
    """A model directory or file cannot be used; the message names the file."""


class XgbDataError(XgbError):
    """Training data is unusable; the message says what is missing."""
