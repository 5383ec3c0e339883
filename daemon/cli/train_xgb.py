"""`vlmtrader train xgb --dataset DIR --bundle DIR`: features + walk-forward XGBoost, saved into the bundle (daemon.training.xgb).

`add_xgb_parser(train_subparsers)` is called by daemon/cli/train.py to add `xgb` under `train`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.errors import EXIT_OK

EXIT_INPUT = 1


def add_xgb_parser(train_sub: Any) -> None:
    p = train_sub.add_parser("xgb", help="train the XGBoost direction model into a bundle")
    p.add_argument(
        "--dataset",
        required=True,
        type=Path,
        help="bars file or directory (CSV/Parquet), or a chart dataset directory (its bars/)",
    )
    p.add_argument("--bundle", required=True, type=Path, help="bundle directory (xgb/ is written)")
    p.add_argument("--window", type=int, default=64, help="bars per window (as the daemon)")
    p.add_argument("--horizon", type=int, default=5, help="label horizon in bars")
    p.add_argument("--folds", type=int, default=4, help="walk-forward folds")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_train_xgb)


def run_train_xgb(args: argparse.Namespace) -> int:
    # xgboost, pandas and the bundle code load here, when training runs (see daemon/cli/__init__.py).
    from daemon.model.loader import XGB_DIR
    from daemon.training.xgb import XgbSettings, train_xgb_bundle
    from vlm_engine.bundle import BundleError
    from vlm_engine.bundle.card import CARD_FILE
    from vlm_engine.dataset.errors import BarsInputError
    from vlm_engine.xgb.errors import XgbError

    settings = XgbSettings(
        window=args.window, horizon=args.horizon, folds=args.folds, seed=args.seed
    )
    try:
        trained = train_xgb_bundle(args.dataset, args.bundle, settings)
    except (BarsInputError, XgbError, BundleError, OSError) as e:
        print(f"vlmtrader: {e}", file=sys.stderr)
        return EXIT_INPUT
    m = trained.metrics
    print(
        f"xgb: {trained.rows} rows, oof auc {m.get('auc', float('nan')):.4f} "
        f"brier {m.get('brier', float('nan')):.4f} ece {m.get('ece', float('nan')):.4f}"
    )
    top = sorted(trained.model.meta.importance.items(), key=lambda kv: -kv[1])[:5]
    print("top features (gain): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    print(
        f"saved: {args.bundle / XGB_DIR}"
        + ("" if trained.recorded else f" (no {CARD_FILE}: an XGBoost-only directory)")
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmtrader train")
    add_xgb_parser(parser.add_subparsers(dest="train_command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
