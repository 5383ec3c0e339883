"""Errors of chart rendering, named by what the caller should do.

ChartError
 ├── ChartInputError   the bars or the image handed in are unusable: reject this one, keep going
 └── SpecMismatch      a model or file was made with another chart spec: refuse it
"""

from __future__ import annotations


class ChartError(Exception):
    """Base of every error raised by vlm_engine.render."""


class ChartInputError(ChartError, ValueError):
    """One input (bars window, PNG file) is malformed; the message names what and where."""


class SpecMismatch(ChartError):
    """Something was produced with a different ChartSpec than the one in use."""
