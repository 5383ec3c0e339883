"""Errors of the model bundle.

BundleError          the bundle directory cannot be used (missing, incomplete, corrupt, or for another chart spec)
└── BundleSpecMismatch   the bundle was trained on charts of another spec than the one being rendered
"""

from __future__ import annotations


class BundleError(Exception):
    """The bundle cannot be used; rebuild it (`vlmtrader model bootstrap`) or point at another one."""


class BundleSpecMismatch(BundleError):
    """The bundle's chart spec hash differs from the spec the caller renders."""
