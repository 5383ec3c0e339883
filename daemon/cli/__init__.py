"""The `vlmtrader` command line: one subcommand per area, each registered by its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that each define `register(subparsers) -> None`; a missing optional one is skipped.
_COMMAND_MODULES = (
    "daemon.cli_run",
    "daemon.cli_config",
    "daemon.cli_tail",
    "daemon.cli_chart",
    "daemon.cli_dataset",
    "daemon.cli_model",
    "daemon.cli_train",
    "daemon.cli_calibrate",
    "daemon.cli_backtest",
    "daemon.cli_ib",
    "daemon.cli_serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmtrader", description="Trade from candlestick charts with CLIP + XGBoost."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
