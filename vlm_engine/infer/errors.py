"""Errors of the inference package.

RuntimeUnavailable   a runtime cannot serve this bundle (no or stale ONNX export, parity refused,
                     onnxruntime cannot load it); the caller serves it on torch instead
PruneRefused         an ONNX tower cannot be cut to its class token (onnx_prune); the caller
                     serves the whole graph
"""

from __future__ import annotations


class RuntimeUnavailable(Exception):
    """The runtime cannot serve the bundle; the message says why. Fall back to torch."""


class ExportRefused(Exception):
    """The ONNX export failed its parity check and was not written; the message says why."""


class PruneRefused(Exception):
    """The tower's graph is not one onnx_prune can cut; the message says why. Serve it whole."""
