"""A config reload applied to the running daemon (SIGHUP, `reload_strategy`): the plan of
daemon/reload_plan.py carried out on the strategy, the risk engine, the log level and the model slot."""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog

from daemon.config import AppConfig, reload_config
from daemon.errors import InputError
from daemon.log_setup import set_log_level
from daemon.model.slot import ModelSlot
from daemon.pipeline import Pipeline
from daemon.reload_plan import BUNDLE_KEYS, ReloadReport, plan_reload

log = structlog.get_logger("daemon.reload")


async def apply_reload(
    running: AppConfig, config_path: Path, pipeline: Pipeline, scorers: ModelSlot
) -> tuple[AppConfig, ReloadReport]:
    """Re-read `config_path` and apply what a running daemon can; returns the config now in force
    and the report. An invalid file changes nothing (ConfigError)."""
    new, changed = reload_config(config_path, running)
    plan = plan_reload(running, new, changed, source=str(config_path))
    cfg, refused = plan.config, dict(plan.refused)
    pipeline.strategy.reconfigure(cfg.strategy)
    pipeline.risk.reconfigure(cfg.risk)
    scorers.apply_settings(cfg.scorer)
    bundle_id = None
    pending, scorers.settings_reload = scorers.settings_reload, None
    if pending is not None:
        try:
            bundle_id = await pending
        except InputError as e:
            why = f"the bundle did not load under it, the running one serves on ({e})"
            for key in plan.applied:
                if key.startswith(BUNDLE_KEYS):
                    refused[key] = why
            cfg = msgspec.structs.replace(cfg, scorer=scorers.settings)
    report = ReloadReport(
        applied=tuple(k for k in plan.applied if k not in refused),
        refused=refused,
        bundle_id=bundle_id,
    )
    (log.warning if refused else log.info)(
        "config.reloaded",
        path=str(config_path),
        applied=list(report.applied),
        refused=report.refused,
        bundle_id=bundle_id,
    )
    # The level changes only once the reload line is written: a thread logging at the new level
    # (the explainer's order.explained at debug) must not put lines ahead of the line saying why.
    set_log_level(cfg.log.level)
    return cfg, report
