"""Errors of the dataset builder, named by what the caller should do.

DatasetError
 ├── BarsInputError     a bar file or frame is unusable: fix the file (the message names it and the row)
 └── ValidationError    a built sample is corrupt or empty: nothing is written, fix the cause
"""

from __future__ import annotations


class DatasetError(Exception):
    """Base of every error raised by vlm_engine.dataset."""


class BarsInputError(DatasetError, ValueError):
    """The bars handed in are malformed."""


class ValidationError(DatasetError):
    """A sample failed validation (corrupt or empty image, empty label)."""
