"""Errors of the CLIP package.

ClipError            a model, tokenizer or dataset cannot be used; fix the input and rerun
└── ClipDataError    the chart/text dataset is missing, empty or malformed
"""

from __future__ import annotations


class ClipError(Exception):
    """A model, tokenizer or dataset cannot be used; the message names what and where."""


class ClipDataError(ClipError):
    """The chart/text dataset is missing, empty or malformed."""
