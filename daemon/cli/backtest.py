"""`vlmtrader backtest` and `vlmtrader evaluate`: the live strategy code over a bars file, with a report (daemon.backtest)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.cli.ray_flag import add_ray_argument
from daemon.cli.runtime_flag import add_runtime_flag


def register(sub: Any) -> None:
    p = sub.add_parser("backtest", help="run the live strategy code over a bars file")
    p.add_argument("--config", required=True, type=Path, help="daemon config YAML")
    p.add_argument("--bars", required=True, type=Path, help="bars file or directory (CSV/Parquet)")
    p.add_argument("--report", required=True, type=Path, help="directory for report.html/json")
    p.add_argument(
        "--bundle",
        type=Path,
        help="model bundle: adds CLIP-only, XGBoost-only and fused (an xgb/-only directory adds XGBoost)",
    )
    p.add_argument("--journal", type=Path, help="SQLite journal for the rules scorer's rows")
    p.add_argument("--journal-writer", choices=("thread", "process"), default="thread",
                   help="the journal's writer: a thread, or a child process (the other core)")  # fmt: skip
    add_runtime_flag(p)
    p.add_argument(
        "--no-explain",
        action="store_true",
        help="skip the per-trade explanation pages (chart, CLIP texts, analogs) of a full bundle",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_ray_argument(p)
    p.set_defaults(func=_backtest)

    e = sub.add_parser("evaluate", help="walk-forward out-of-sample evaluation on a bars file")
    e.add_argument("--bars", required=True, type=Path, help="bars file or directory (CSV/Parquet)")
    e.add_argument("--bundle", required=True, type=Path, help="model bundle directory")
    e.add_argument("--config", type=Path, help="daemon config YAML (strategy, risk, costs)")
    e.add_argument(
        "--report", type=Path, help="directory for report.html/json and predictions.parquet"
    )
    e.add_argument(
        "--horizon",
        type=_positive_int,
        help="label horizon in bars (default: the bundle's on its own bar size, else 5)",
    )
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_ray_argument(e)
    add_runtime_flag(e)
    e.set_defaults(func=_evaluate)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        msg = f"--horizon must be a positive number of bars, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _backtest(args: argparse.Namespace) -> int:
    # the strategy core, pandas and the model stack load here (see daemon/cli/__init__.py).
    from daemon.backtest import run_backtest

    return run_backtest(args)


def _evaluate(args: argparse.Namespace) -> int:
    from daemon.backtest import run_evaluate

    return run_evaluate(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmtrader")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
