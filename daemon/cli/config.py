"""`vlmtrader config check FILE`: validate a config and print its one-line verdict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from daemon.errors import EXIT_CONFIG, EXIT_OK, ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="check or show a configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    check = csub.add_parser("check", help="validate a YAML config; exit 2 on the first problem")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--show", action="store_true", help="print the config with defaults filled in"
    )
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from daemon.config import load_config  # pandas and xgboost come with the config types

    try:
        cfg = load_config(args.file)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.show:
        sys.stdout.write(msgspec.yaml.encode(cfg).decode())
    print(f"ok: {args.file} (mode {cfg.mode}, account {cfg.account})")
    return EXIT_OK
