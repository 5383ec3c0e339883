"""Errors of the inference package.

RuntimeUnavailable   a runtime cannot serve this bundle (no or stale ONNX export, parity refused,
                     onnxruntime cannot load it); the caller serves it on torch instead
"""

from __future__ import annotations


class RuntimeUnavailable(Exception):
    """The runtime cannot serve the bundle; the message says why. Fall back to torch."""


class ExportRefused(Exception):
    """The ONNX export failed its parity check and was not written; the message says why."""
