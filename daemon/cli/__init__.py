"""The `vlmtrader` command line: one subcommand per area, each registered by its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that each define `register(subparsers) -> None`; a missing optional one is skipped.
_COMMAND_MODULES = (
    "daemon.cli.run",
    "daemon.cli.config",
    "daemon.cli.tail",
    "daemon.cli.chart",
    "daemon.cli.dataset",
    "daemon.cli.model",
    "daemon.cli.train",
    "daemon.cli.calibrate",
    "daemon.cli.backtest",
    "daemon.cli.ib",
    "daemon.cli.serve",
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
