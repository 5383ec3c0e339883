"""The backtester: the live strategy stages over historical bars, metrics, comparison and report."""

from __future__ import annotations
