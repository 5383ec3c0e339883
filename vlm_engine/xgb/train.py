"""Train the XGBoost direction model: walk-forward purged folds for out-of-fold predictions,
early stopping on a purged time holdout, class weighting, Platt calibration.

Calibration never sees the rows it is applied to: fold 0 of the walk-forward is the calibration
fold. Its out-of-fold predictions stay uncalibrated; one Platt map fitted on them (earlier than
every later fold) calibrates the out-of-fold predictions of folds 1.. - one map for all of them,
so pooled over those folds calibration changes Brier and ECE, never the ranking (AUC). (A map per
fold, refitted on all earlier folds, would reorder predictions across folds: pooled AUC then moves
with the maps, e.g. 0.495 raw -> 0.518 calibrated on real daily bars whose every fold is below 0.5.)
The final model's map (used live) is fitted on all out-of-fold rows. Every map is monotone
increasing: a fit with a negative slope is refused (identity, logged as calibration.refused).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import structlog
import xgboost as xgb

from vlm_engine.metrics import LogisticParams, fit_platt, logit, summary
from vlm_engine.shards import TaskMap, run_locally
from vlm_engine.xgb.errors import XgbDataError
from vlm_engine.xgb.folds import holdout_split, walk_forward_folds
from vlm_engine.xgb.model import XgbMeta, XgbModel

log = structlog.get_logger("vlm_engine.xgb.train")

FloatArray = npt.NDArray[np.float64]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(gt=0, lt=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class XgbTrainConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Folds, early stopping and booster parameters."""

    n_folds: PositiveInt = 4
    min_train_fraction: Fraction = 0.3
    embargo_bars: Annotated[int, msgspec.Meta(ge=0)] = 5
    valid_fraction: Fraction = 0.2
    max_depth: PositiveInt = 3
    learning_rate: PositiveFloat = 0.05
    num_boost_round: PositiveInt = 400
    early_stopping_rounds: PositiveInt = 30
    subsample: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    colsample_bytree: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    min_child_weight: PositiveFloat = 5.0
    reg_lambda: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    class_weight: Literal["balanced", "none"] = "balanced"
    calibrate: bool = True
    nthread: PositiveInt = 2
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0


class TrainResult:
    """The final model, its walk-forward out-of-fold predictions and their metrics."""

    def __init__(
        self,
        *,
        model: XgbModel,
        oof: FloatArray,
        oof_raw: FloatArray,
        fold_metrics: list[dict[str, float]],
        metrics: dict[str, float],
        fold: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self.model = model
        self.oof = oof
        self.oof_raw = oof_raw
        # walk-forward fold of each row's out-of-fold prediction (-1: none, training span only)
        self.fold = np.full(oof.shape[0], -1, dtype=np.int64) if fold is None else fold
        self.fold_metrics = fold_metrics
        self.metrics = metrics


def class_weights(y: FloatArray, mode: str) -> FloatArray:
    """Per-row weights making both classes weigh the same in total ("balanced")."""
    if mode == "none":
        return np.ones_like(y)
    n = y.shape[0]
    n_up = float((y > 0.5).sum())
    n_down = n - n_up
    if n_up == 0 or n_down == 0:
        return np.ones_like(y)
    return np.asarray(np.where(y > 0.5, n / (2 * n_up), n / (2 * n_down)), dtype=np.float64)


def _params(cfg: XgbTrainConfig) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": cfg.max_depth,
        "eta": cfg.learning_rate,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "min_child_weight": cfg.min_child_weight,
        "lambda": cfg.reg_lambda,
        "nthread": cfg.nthread,
        "seed": cfg.seed,
    }


def fit_booster(
    x: FloatArray,
    y: FloatArray,
    ts: npt.NDArray[np.int64],
    label_end: npt.NDArray[np.int64],
    names: list[str],
    cfg: XgbTrainConfig,
    embargo_seconds: int,
) -> xgb.Booster:
    """Fit on rows (x, y) with early stopping on their last valid_fraction in time, then refit on all."""
    fit_rows, valid_rows = holdout_split(
        ts, label_end, valid_fraction=cfg.valid_fraction, embargo_seconds=embargo_seconds
    )
    params = _params(cfg)
    rounds = cfg.num_boost_round
    if len(fit_rows) >= 20 and len(valid_rows) >= 20:
        dfit = xgb.DMatrix(
            x[fit_rows],
            label=y[fit_rows],
            weight=class_weights(y[fit_rows], cfg.class_weight),
            feature_names=names,
            missing=np.nan,
            nthread=cfg.nthread,
        )
        dvalid = xgb.DMatrix(
            x[valid_rows],
            label=y[valid_rows],
            weight=class_weights(y[valid_rows], cfg.class_weight),
            feature_names=names,
            missing=np.nan,
            nthread=cfg.nthread,
        )
        probe = xgb.train(
            params,
            dfit,
            num_boost_round=cfg.num_boost_round,
            evals=[(dvalid, "valid")],
            early_stopping_rounds=cfg.early_stopping_rounds,
            verbose_eval=False,
        )
        rounds = int(probe.best_iteration) + 1
    dall = xgb.DMatrix(
        x,
        label=y,
        weight=class_weights(y, cfg.class_weight),
        feature_names=names,
        missing=np.nan,
        nthread=cfg.nthread,
    )
    booster = xgb.train(params, dall, num_boost_round=rounds, verbose_eval=False)
    booster.set_attr(best_iteration=str(rounds - 1))
    return booster


class FitJob(msgspec.Struct, frozen=True, kw_only=True):
    """One fit of train_xgb: a walk-forward fold (row indices), or the final model (both None)."""

    train: npt.NDArray[np.intp] | None
    test: npt.NDArray[np.intp] | None


def fit_job(
    job: FitJob,
    *,
    x: FloatArray,
    y: FloatArray,
    ts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    names: list[str],
    config: XgbTrainConfig,
    embargo: int,
) -> Any:
    """A fold's out-of-fold raw predictions on its test rows, or the final booster on all rows."""
    if job.train is None or job.test is None:
        return fit_booster(x, y, ts, ends, names, config, embargo)
    train = job.train
    booster = fit_booster(x[train], y[train], ts[train], ends[train], names, config, embargo)
    dtest = xgb.DMatrix(x[job.test], feature_names=names, missing=np.nan, nthread=config.nthread)
    return booster.predict(dtest)


def _check(x: FloatArray, y: FloatArray, ts: npt.NDArray[np.int64], names: tuple[str, ...]) -> None:
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] != ts.shape[0]:
        msg = f"features {x.shape}, labels {y.shape} and times {ts.shape} do not line up"
        raise XgbDataError(msg)
    if x.shape[1] != len(names):
        msg = f"{x.shape[1]} feature columns but {len(names)} feature names"
        raise XgbDataError(msg)
    if not np.isin(y, (0.0, 1.0)).all():
        msg = "labels must be 0 (down) or 1 (up)"
        raise XgbDataError(msg)
    if y.shape[0] < 100:
        msg = f"only {y.shape[0]} labelled rows: need at least 100 to train"
        raise XgbDataError(msg)
    if y.min() == y.max():
        msg = "labels have a single class: the data has no up/down variation"
        raise XgbDataError(msg)


def train_xgb(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    ts: npt.ArrayLike,
    label_end: npt.ArrayLike,
    feature_names: tuple[str, ...],
    config: XgbTrainConfig,
    bar_seconds: int,
    horizon_bars: int,
    feature_config: dict[str, Any] | None = None,
    task_map: TaskMap | None = None,
) -> TrainResult:
    """Walk-forward OOF predictions, calibration on them, then the final model on all rows.

    task_map runs the folds' fits and the final fit (default: one after another, here)."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    tsa = np.asarray(ts, dtype=np.int64)
    ends = np.asarray(label_end, dtype=np.int64)
    _check(xa, ya, tsa, feature_names)
    names = list(feature_names)
    embargo = config.embargo_bars * bar_seconds
    try:
        folds = walk_forward_folds(
            tsa,
            ends,
            n_folds=config.n_folds,
            embargo_seconds=embargo,
            min_train_fraction=config.min_train_fraction,
        )
    except ValueError as e:
        raise XgbDataError(str(e)) from None

    oof_raw = np.full(ya.shape[0], np.nan)
    fold_of = np.full(ya.shape[0], -1, dtype=np.int64)
    fold_metrics: list[dict[str, float]] = []
    trained = [
        (k, fold)
        for k, fold in enumerate(folds)
        if len(fold.train) >= 50 and ya[fold.train].min() != ya[fold.train].max()
    ]
    # every fold and the final model are independent fits: one task each under a distributed map
    jobs = [FitJob(train=fold.train, test=fold.test) for _, fold in trained]
    jobs.append(FitJob(train=None, test=None))
    shared = {"x": xa, "y": ya, "ts": tsa, "ends": ends, "names": names, "config": config,
              "embargo": embargo}  # fmt: skip
    fitted = (task_map or run_locally)(
        fit_job, jobs, shared=shared, desc="xgb folds", weights=[1] * len(jobs)
    )
    for (k, fold), predicted in zip(trained, fitted[:-1], strict=True):
        train = fold.train
        oof_raw[fold.test] = predicted
        fold_of[fold.test] = k
        fold_metrics.append(
            {
                "fold": float(k),
                "train_rows": float(len(train)),
                "test_start": float(fold.test_start),
                **summary(ya[fold.test], oof_raw[fold.test]),
            }
        )
        log.info("xgb.fold_trained", fold=k, train_rows=len(train), test_rows=len(fold.test),
                 auc=round(fold_metrics[-1]["auc"], 4))  # fmt: skip
    covered = np.isfinite(oof_raw)
    oof = (
        calibrate_after_first_fold(oof_raw, ya, fold_of)[0] if config.calibrate else oof_raw.copy()
    )
    calibration: LogisticParams | None = None
    if config.calibrate and covered.sum() >= 50:
        calibration = fit_platt(oof_raw[covered], ya[covered], model="xgb final model")

    booster = fitted[-1]
    metrics = summary(ya[covered], oof[covered]) if covered.any() else {}
    meta = XgbMeta(
        feature_names=feature_names,
        calibration=calibration,
        horizon_bars=horizon_bars,
        bar_seconds=bar_seconds,
        best_iteration=int(booster.attr("best_iteration") or 0),
        feature_config=feature_config or {},
        metrics={f"oof_{k}": v for k, v in metrics.items()},
    )
    model = XgbModel(booster=booster, meta=meta)
    importance = model.importance("gain")
    model.meta = msgspec.structs.replace(meta, importance=importance)
    log.info("xgb.trained", rows=int(ya.shape[0]), oof_rows=int(covered.sum()),
             oof_auc=round(metrics.get("auc", float("nan")), 4), rounds=meta.best_iteration + 1)  # fmt: skip
    return TrainResult(
        model=model,
        oof=oof,
        oof_raw=oof_raw,
        fold_metrics=fold_metrics,
        metrics=metrics,
        fold=fold_of,
    )


def calibrate_after_first_fold(
    raw: FloatArray, y: FloatArray, fold: npt.NDArray[np.int64], *, min_rows: int = 50
) -> tuple[FloatArray, LogisticParams | None]:
    """Folds after the first through one Platt map fitted on the first fold's out-of-fold rows
    (None and all raw when it has fewer than min_rows rows or the map is refused); the first fold
    (fold 0, or the earliest that was trained) stays raw."""
    out = raw.copy()
    trained = fold[fold >= 0]
    if trained.size == 0:
        return out, None
    first_fold = int(trained.min())
    first = (fold == first_fold) & np.isfinite(raw)
    params = None
    if first.sum() >= min_rows:
        params = fit_platt(
            raw[first], y[first], model=f"xgb out-of-fold, fitted on fold {first_fold}"
        )
    if params is not None:
        later = (fold > first_fold) & np.isfinite(raw)
        out[later] = params.predict(logit(raw[later]))
    return out, params
