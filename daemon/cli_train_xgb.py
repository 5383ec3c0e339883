"""`vlmtrader train xgb --dataset DIR --bundle DIR`: features + walk-forward XGBoost, saved into the bundle.

`add_xgb_parser(train_subparsers)` is called by daemon/cli_train.py to add `xgb` under `train`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import structlog

from daemon.build.tabular import with_drift
from daemon.errors import EXIT_OK
from daemon.model.loader import FUSION_FILE, XGB_DIR
from strategy.backtest.data import build_dataset, frame_batches
from strategy.bars import BarStoreConfig
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import FusionConfig
from vlm_engine.bundle import BundleError, TrainedOn, add_to_bundle
from vlm_engine.bundle.bundle import CARD_FILE
from vlm_engine.dataset.bars import frame_bar_seconds, load_bars, ts_seconds
from vlm_engine.dataset.errors import BarsInputError
from vlm_engine.xgb.errors import XgbError
from vlm_engine.xgb.model import XgbModel
from vlm_engine.xgb.train import XgbTrainConfig, train_xgb

log = structlog.get_logger("daemon.cli_train_xgb")

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


def _bars_path(dataset: Path) -> Path:
    """A chart dataset directory keeps its source bars under bars/ (`dataset build` writes them); otherwise the path is the bars."""
    if (dataset / "manifest.json").is_file():
        bars = dataset / "bars"
        if not bars.exists():
            msg = (
                f"{dataset}: chart dataset without a bars/ directory (built before datasets kept their bars); "
                "pass the bars file the dataset was built from: --dataset BARS.parquet"
            )
            raise BarsInputError(msg)
        return bars
    return dataset


def run_train_xgb(args: argparse.Namespace) -> int:
    try:
        frame = load_bars(_bars_path(args.dataset))
        bar_seconds = frame_bar_seconds(frame, where=str(args.dataset))
    except BarsInputError as e:
        print(f"vlmtrader: {e}", file=sys.stderr)
        return EXIT_INPUT
    features = FeatureConfig(lookback=args.window)
    store = BarStoreConfig(window=args.window, bar_seconds=bar_seconds)
    train = XgbTrainConfig(n_folds=args.folds, seed=args.seed)
    dataset = build_dataset(
        frame_batches(frame), store, FeatureEngine(config=features), horizon=args.horizon
    )
    rows = dataset.labelled()
    try:
        result = train_xgb(
            dataset.x[rows],
            dataset.y[rows],
            ts=dataset.ts[rows],
            label_end=dataset.label_end[rows],
            feature_names=dataset.feature_names,
            config=train,
            bar_seconds=bar_seconds,
            horizon_bars=args.horizon,
            feature_config=msgspec.to_builtins(features),
        )
    except XgbError as e:
        print(f"vlmtrader: {args.dataset}: {e}", file=sys.stderr)
        return EXIT_INPUT
    source = str(args.dataset)
    model = with_drift(
        result.model,
        dataset.x[rows],
        np.abs(2 * result.oof - 1),
        train_config=train,
        rows=int(rows.sum()),
        source=source,
    )
    try:
        recorded = _save(args.bundle, model, result.metrics, frame, bar_seconds, args, source)
    except (XgbError, BundleError, OSError) as e:
        print(f"vlmtrader: {e}", file=sys.stderr)
        return EXIT_INPUT
    m = result.metrics
    print(
        f"xgb: {int(rows.sum())} rows, oof auc {m.get('auc', float('nan')):.4f} "
        f"brier {m.get('brier', float('nan')):.4f} ece {m.get('ece', float('nan')):.4f}"
    )
    top = sorted(model.meta.importance.items(), key=lambda kv: -kv[1])[:5]
    print("top features (gain): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    print(
        f"saved: {args.bundle / XGB_DIR}"
        + ("" if recorded else f" (no {CARD_FILE}: an XGBoost-only directory)")
    )
    return EXIT_OK


def _save(
    bundle: Path,
    model: XgbModel,
    metrics: dict[str, float],
    frame: pd.DataFrame,
    bar_seconds: int,
    args: argparse.Namespace,
    source: str,
) -> bool:
    """Write xgb/ (and a default fusion.json when there is none) and record it in the model card if there is one."""
    from daemon.build.tabular import xgb_files

    fusion = bundle / FUSION_FILE
    if not (bundle / CARD_FILE).is_file():
        model.save(bundle / XGB_DIR)
        if not fusion.exists():
            fusion.write_bytes(msgspec.json.format(msgspec.json.encode(FusionConfig())))
        return False
    files = {f"{XGB_DIR}/{name}": data for name, data in xgb_files(model).items()}
    if not fusion.exists():
        files[FUSION_FILE] = msgspec.json.format(msgspec.json.encode(FusionConfig())) + b"\n"
    ts = ts_seconds(frame)
    add_to_bundle(
        bundle,
        files=files,
        metrics={f"xgb_oof_{k}": v for k, v in metrics.items()},
        stages={
            "xgb": {
                "command": "vlmtrader train xgb",
                "source": source,
                "window": args.window,
                "horizon_bars": args.horizon,
                "folds": args.folds,
                "files": sorted(files),
            }
        },
        trained_on=TrainedOn(
            source=source,
            bar_seconds=bar_seconds,
            horizon_bars=args.horizon,
            symbols=tuple(sorted(frame["symbol"].unique().tolist())),
            start=int(ts.min()),
            end=int(ts.max()),
        ),
    )
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmtrader train")
    add_xgb_parser(parser.add_subparsers(dest="train_command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
