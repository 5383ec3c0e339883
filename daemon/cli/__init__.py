"""The `vlmtrader` command line: one thin module per subcommand, each with `register(subparsers)`.

A command module parses its arguments, calls library code and prints the result. It imports
its library (torch, transformers, xgboost, pandas, the model stack, the daemon itself) inside
the handler that needs it, never at the top, so `vlmtrader --help` and `vlmtrader CMD --help`
answer at once; that is the reason for every function-level import under daemon/cli/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from daemon.cli import (
    backtest,
    calibrate,
    chart,
    config,
    dataset,
    explain,
    ib,
    model,
    run,
    search,
    serve,
    tail,
    train,
)

_COMMANDS = (
    run,
    config,
    tail,
    chart,
    dataset,
    model,
    train,
    calibrate,
    backtest,
    ib,
    serve,
    explain,
    search,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmtrader", description="Trade from candlestick charts with CLIP + XGBoost."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in _COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
