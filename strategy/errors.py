"""Errors of the pure core.

StrategyError
 ├── ConfigError       bad configuration of a core component: fix the config (exit 2 at startup)
 └── InvariantError    the core's own state is inconsistent: crash, restart, reconcile from the journal
"""

from __future__ import annotations


class StrategyError(Exception):
    """Base of every error raised by strategy/."""


class ConfigError(StrategyError):
    """A configuration value is unusable; the message names the key and the fix."""


class InvariantError(StrategyError):
    """An internal invariant broke; the process should crash and reconcile on restart."""
