"""The pure trading core; its per-bar modules run compiled when build/native matches (strategy.native)."""

from strategy import native as _native

NATIVE = _native.activate(__path__)
