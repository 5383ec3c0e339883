"""`vlmtrader train xgb` as a library: bars -> TA-Lib features -> walk-forward XGBoost, saved into a bundle.

train_xgb_bundle reads the bars (a bars file or directory, or a chart dataset's bars/), fits the
model with out-of-fold metrics and a drift reference, and writes xgb/ (plus a default
fusion.json) into the bundle, recording it in the model card when the bundle has one.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pandas as pd

from daemon.model.loader import FUSION_FILE, XGB_DIR
from daemon.training.tabular import with_drift, xgb_files
from strategy.backtest.data import build_dataset, frame_batches
from strategy.bars import BarStoreConfig
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import FusionConfig
from vlm_engine.bundle import TrainedOn, add_to_bundle
from vlm_engine.bundle.card import CARD_FILE
from vlm_engine.dataset.bars import frame_bar_seconds, load_bars, ts_seconds
from vlm_engine.dataset.errors import BarsInputError
from vlm_engine.xgb.errors import XgbError
from vlm_engine.xgb.model import XgbModel
from vlm_engine.xgb.train import XgbTrainConfig, train_xgb


class XgbSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What `train xgb` fits: window (bars, as the daemon), label horizon, walk-forward folds, seed."""

    window: int = 64
    horizon: int = 5
    folds: int = 4
    seed: int = 0


class XgbTrained(msgspec.Struct, frozen=True, kw_only=True):
    """What train_xgb_bundle did: rows fitted, out-of-fold metrics, the model, whether the card recorded it."""

    rows: int
    metrics: dict[str, float]
    model: XgbModel
    recorded: bool


def bars_path(dataset: Path) -> Path:
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


def train_xgb_bundle(dataset: Path, bundle: Path, settings: XgbSettings) -> XgbTrained:
    """Fit XGBoost on the bars at `dataset` and save it into `bundle`.

    Raises BarsInputError (the bars), XgbError (the fit or the save), BundleError or OSError (the bundle)."""
    frame = load_bars(bars_path(dataset))
    bar_seconds = frame_bar_seconds(frame, where=str(dataset))
    features = FeatureConfig(lookback=settings.window)
    store = BarStoreConfig(window=settings.window, bar_seconds=bar_seconds)
    train = XgbTrainConfig(n_folds=settings.folds, seed=settings.seed)
    data = build_dataset(
        frame_batches(frame), store, FeatureEngine(config=features), horizon=settings.horizon
    )
    rows = data.labelled()
    try:
        result = train_xgb(
            data.x[rows],
            data.y[rows],
            ts=data.ts[rows],
            label_end=data.label_end[rows],
            feature_names=data.feature_names,
            config=train,
            bar_seconds=bar_seconds,
            horizon_bars=settings.horizon,
            feature_config=msgspec.to_builtins(features),
        )
    except XgbError as e:
        msg = f"{dataset}: {e}"
        raise type(e)(msg) from None
    source = str(dataset)
    model = with_drift(
        result.model,
        data.x[rows],
        np.abs(2 * result.oof - 1),
        train_config=train,
        rows=int(rows.sum()),
        source=source,
    )
    recorded = _save(bundle, model, result.metrics, frame, bar_seconds, settings, source)
    return XgbTrained(rows=int(rows.sum()), metrics=result.metrics, model=model, recorded=recorded)


def _save(
    bundle: Path,
    model: XgbModel,
    metrics: dict[str, float],
    frame: pd.DataFrame,
    bar_seconds: int,
    settings: XgbSettings,
    source: str,
) -> bool:
    """Write xgb/ (and a default fusion.json when there is none) and record it in the model card if there is one."""
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
                "window": settings.window,
                "horizon_bars": settings.horizon,
                "folds": settings.folds,
                "files": sorted(files),
            }
        },
        trained_on=TrainedOn(
            source=source,
            bar_seconds=bar_seconds,
            horizon_bars=settings.horizon,
            symbols=tuple(sorted(frame["symbol"].unique().tolist())),
            start=int(ts.min()),
            end=int(ts.max()),
        ),
    )
    return True
