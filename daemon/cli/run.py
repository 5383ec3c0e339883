"""`vlmtrader run`: start the daemon from a YAML config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from daemon.errors import EXIT_CONFIG, ConfigError
from daemon.log_setup import configure_logging

if TYPE_CHECKING:
    from daemon.config import AppConfig


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the trading daemon")
    p.add_argument("--config", required=True, type=Path, help="YAML config file")
    p.add_argument("--state-dir", type=Path, help="override state_dir (journal, venue, bundles)")
    p.add_argument("--speed", type=float, help="override feed.sim.speed (0 = as fast as possible)")
    p.add_argument("--max-bars", type=int, help="stop the simulated feed after N bar batches")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="override log.format")
    p.set_defaults(func=_run)


def apply_overrides(cfg: AppConfig, args: argparse.Namespace) -> AppConfig:
    """Apply command-line overrides, then re-validate the cross-field rules."""
    from daemon.config import validate  # the config pulls in pandas and xgboost: not for --help

    replace = msgspec.structs.replace
    if args.state_dir is not None:
        cfg = replace(cfg, state_dir=str(args.state_dir))
    if args.log_format is not None:
        cfg = replace(cfg, log=replace(cfg.log, format=args.log_format))
    sim = cfg.feed.sim
    if args.speed is not None:
        sim = replace(sim, speed=args.speed)
    if args.max_bars is not None:
        sim = replace(sim, max_bars=args.max_bars)
    cfg = replace(cfg, feed=replace(cfg.feed, sim=sim))
    return validate(cfg, source="command line")


def _run(args: argparse.Namespace) -> int:
    # the daemon (and its model stack) loads here, when it runs (see daemon/cli/__init__.py)
    from daemon.app import run
    from daemon.config import load_config

    try:
        cfg = apply_overrides(load_config(args.config), args)
    except ConfigError as e:
        configure_logging()
        print(f"error: {e}")
        return EXIT_CONFIG
    configure_logging(level=cfg.log.level, fmt=cfg.log.format)
    return run(cfg, config_path=args.config)
