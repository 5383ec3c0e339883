"""What a config reload (SIGHUP, `reload_strategy`) may change in a running daemon, and what it may not.

Pure: the running config, the re-read one and the changed keys in; the config to run on, the keys
applied and the keys refused (each with a one-line reason) out. Every key a restart would be
needed for keeps its running value, so `/status` never reports a mode or account the orders do
not use.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from daemon.config import AppConfig, validate

# The scorer settings ModelSlot.apply_settings takes by re-loading the bundle (the one list: the
# slot reads it by setting name, the reload by config key); a bundle that fails to load under them
# takes them back (daemon/reload.py).
BUNDLE_SETTINGS = ("mode", "fusion", "bundle", "spec_hash")
BUNDLE_KEYS = tuple(f"scorer.{name}" for name in BUNDLE_SETTINGS)

# Keys a running daemon applies on reload: strategy and risk (reconfigured in place), the shutdown
# settings (read at shutdown), the log level, and the scorer settings ModelSlot.apply_settings
# takes (rules at once; BUNDLE_KEYS by re-loading the bundle).
LIVE_KEYS = ("partial", "strategy", "risk", "shutdown", "log.level", "scorer.rules", *BUNDLE_KEYS)

# Why the other keys need a restart, by their longest matching prefix.
RESTART_REASONS = {
    "mode": "the broker connection is opened at start",
    "confirm_live": "goes with mode, which is fixed at start",
    "account": "it names the order ids and MQTT topics fixed at start",
    "state_dir": "the journal and venue files are opened at start",
    "journal": "the journal is opened at start",
    "starting_cash": "the book is restored at start",
    "feed": "the feed is connected at start",
    "bars": "the bar windows are built at start",
    "broker": "the paper venue is opened at start",
    "ib": "the IB Gateway sessions are opened at start",
    "mqtt": "the MQTT session is opened at start",
    "api": "the HTTP server is bound at start",
    "log.format": "the log renderer is chosen at start",
    "explain": "the explainer thread and its store are opened at start",
    "scorer": "the scorer kind, shadow, bootstrap and inference threads are set up at start",
    "order_path_priority": "the order path's scheduling is set up at start",
}


class ReloadReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one reload: the keys now in force, and the refused ones with their reason."""

    applied: tuple[str, ...] = ()
    refused: dict[str, str] = msgspec.field(default_factory=dict)
    bundle_id: str | None = None  # set when the reload re-loaded the model bundle


class ReloadPlan(msgspec.Struct, frozen=True, kw_only=True):
    config: AppConfig  # the running config with the live keys of the new one
    applied: tuple[str, ...]
    refused: dict[str, str]


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith((f"{prefix}.", f"{prefix}["))


def restart_reason(key: str) -> str | None:
    """None when a running daemon applies the key, else why it needs a restart (one line)."""
    if any(_under(key, live) for live in LIVE_KEYS):
        return None
    matches = [p for p in RESTART_REASONS if _under(key, p)]
    why = RESTART_REASONS[max(matches, key=len)] if matches else "it is read only at start"
    return f"needs a restart: {why}"


def plan_reload(
    running: AppConfig, new: AppConfig, changed: Sequence[str], *, source: str = "reload"
) -> ReloadPlan:
    """Split the changed keys into applied and refused, and build the config to run on.

    Raises ConfigError when the live keys of `new` do not fit the running ones (e.g. a new
    strategy.bar_seconds while bars.bar_seconds, which needs a restart, keeps its value)."""
    replace = msgspec.structs.replace
    scorer = replace(
        running.scorer,
        rules=new.scorer.rules,
        mode=new.scorer.mode,
        fusion=new.scorer.fusion,
        bundle=new.scorer.bundle,
        spec_hash=new.scorer.spec_hash,
    )
    config = replace(
        running,
        partial=new.partial,
        strategy=new.strategy,
        risk=new.risk,
        shutdown=new.shutdown,
        log=replace(running.log, level=new.log.level),
        scorer=scorer,
    )
    refused = {key: why for key in changed if (why := restart_reason(key)) is not None}
    applied = tuple(key for key in changed if key not in refused)
    validate(config, source=f"{source}: reload refused, the keys it can apply do not fit the rest")
    return ReloadPlan(config=config, applied=applied, refused=refused)
