"""The tabular stage: TA-Lib features + CLIP outputs -> walk-forward XGBoost (and a technical-only twin) -> fusion.

Fitted on the tabular rows (after CLIP's part, label windows ending before the held-out part);
the held-out rows are only scored, by the models fitted before them, for the card's figures.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
import structlog

from daemon.model.loader import FUSION_FILE, PCA_FILE, XGB_DIR, XGB_TECHNICAL_DIR
from daemon.model.vision import ClipVision
from daemon.training.config import BuildConfig, TabularConfig
from strategy.backtest.data import build_dataset, frame_batches
from strategy.bars import BarStoreConfig, FloatArray, Window
from strategy.drift import drift_reference
from strategy.features import FeatureEngine
from strategy.fusion import FusionConfig, Recalibration, fit_stacking
from strategy.ml_scorer import VisionScores, vision_columns
from vlm_engine.bundle import ModelCard, add_to_bundle
from vlm_engine.infer import InferenceConfig, load_engine
from vlm_engine.metrics import fit_platt, logit, sigmoid, summary, unmeasured
from vlm_engine.shards import TaskMap
from vlm_engine.xgb import XgbError, XgbModel, fit_pca, train_xgb
from vlm_engine.xgb.train import TrainResult

log = structlog.get_logger("daemon.training")

BoolArray = npt.NDArray[np.bool_]
HELD_OUT_MODELS = ("clip", "xgb_technical", "xgb", "fused")


def fit_tabular(
    frame: pd.DataFrame,
    cfg: BuildConfig,
    bundle: Path,
    *,
    bar_seconds: int,
    horizon: int,
    holdout_start: int,
    source: str,
    tick: Callable[[int], object] | None = None,
    task_map: TaskMap | None = None,
) -> ModelCard:
    """Fit XGBoost + fusion on the bars of `frame` before holdout_start, score the rest; added to the bundle.

    Args:
        frame: the bars after CLIP's part (every symbol), held-out part included.
        holdout_start: epoch seconds; rows at or after it are only scored.
        tick: called with the number of windows CLIP scored (a progress bar).
        task_map: runs the walk-forward XGBoost fits (default: here, one after another).
    """
    tab = cfg.tabular
    started = time.perf_counter()
    # CLIP's columns from the bundle's fp32 ONNX export, parity checked against torch at load
    # (within 1e-4; torch when refused): on the build's batches of a few charts it costs about half
    # torch's CPU time per chart (0.40-0.54 vs 0.99-1.05 ms at batch 8, load ~20), and the tabular
    # stage scores every window after CLIP's part (79,496 on the default bootstrap: 24.6 vs 42.4 s CPU).
    engine = load_engine(
        bundle,
        config=InferenceConfig(device="cpu", threads=cfg.threads, warmup_batches=1, runtime="onnx"),
    )
    vision = ClipVision(engine=engine)
    scored: list[VisionScores] = []

    def clip_columns(windows: Sequence[Window]) -> tuple[tuple[str, ...], FloatArray]:
        scores = vision.score_windows(windows)
        scored.append(scores)
        if tick is not None:
            tick(len(windows))
        return vision_columns(scores, None)

    # Windows may span gaps (nights, weekends): the chart and features read the last bars as they are.
    store = BarStoreConfig(window=tab.window, bar_seconds=bar_seconds, gap_policy="accept")
    ds = build_dataset(
        frame_batches(frame),
        store,
        FeatureEngine(config=tab.features),
        horizon=horizon,
        extra=clip_columns,
    )
    scored_seconds = time.perf_counter() - started
    labelled = ds.labelled()
    fit_rows = labelled & (ds.label_end < holdout_start - cfg.split.embargo_bars * bar_seconds)
    held_rows = labelled & (ds.ts >= holdout_start)
    if fit_rows.sum() < 100 or held_rows.sum() < 20:
        msg = (
            f"too few rows for the tabular stage: {int(fit_rows.sum())} to fit, "
            f"{int(held_rows.sum())} held out (need 100 and 20): give more bars or raise split fractions"
        )
        raise XgbError(msg)
    x, names = ds.x, ds.feature_names
    embeddings = np.vstack([s.embeddings for s in scored])
    pca = None
    if tab.pca_components:
        pca = fit_pca(embeddings[fit_rows], tab.pca_components)  # unsupervised, fitted rows only
        x = np.hstack([x, pca.transform(embeddings)])
        names = (*names, *(f"clip_pc{i}" for i in range(len(pca.components))))
    technical = np.array([not n.startswith("clip_") for n in names])
    clip_p = np.concatenate([s.p_up for s in scored])
    xf, yf, tsf = x[fit_rows], ds.y[fit_rows], ds.ts[fit_rows]

    def fit_xgb(columns: BoolArray) -> TrainResult:
        return train_xgb(
            xf[:, columns],
            yf,
            ts=tsf,
            label_end=ds.label_end[fit_rows],
            feature_names=tuple(n for n, keep in zip(names, columns, strict=True) if keep),
            config=tab.xgb,
            bar_seconds=bar_seconds,
            horizon_bars=horizon,
            feature_config=msgspec.to_builtins(tab.features),
            task_map=task_map,
        )

    result = fit_xgb(np.ones(len(names), dtype=bool))
    alone = fit_xgb(technical)  # the same folds (they depend on time only), no CLIP columns
    probs = {"clip": clip_p[fit_rows], "xgb": result.oof}
    fusion = fit_fusion(tab, probs, yf, tsf)
    covered = np.isfinite(result.oof)
    live = {m: p[covered] for m, p in probs.items()}
    fused = combine(fusion, live)
    seen = recalibrated(fusion.recalibrate, live)  # what FusionEngine measures disagreement on
    disagreement = np.abs(seen["clip"] - seen["xgb"])
    confidence = np.abs(2 * fused - 1) * np.maximum(
        0.0, 1.0 - fusion.disagreement_penalty * disagreement
    )
    model = with_drift(
        result.model,
        xf[covered],
        confidence,
        train_config=tab.xgb,
        rows=len(result.oof),
        source=source,
    )
    alone_covered = np.isfinite(alone.oof)
    technical_model = with_drift(
        alone.model,
        xf[alone_covered][:, technical],
        np.abs(2 * alone.oof[alone_covered] - 1),  # what mode xgb's confidence is
        train_config=tab.xgb,
        rows=len(alone.oof),
        source=source,
    )
    xh, yh = x[held_rows], ds.y[held_rows]
    held = {"clip": clip_p[held_rows], "xgb": model.predict(xh)}
    held_out = {
        "fused": combine(fusion, held),
        "clip": recalibrated(fusion.recalibrate, held)["clip"],  # CLIP-only as the daemon trades it
        "xgb": held["xgb"],
        "xgb_technical": technical_model.predict(xh[:, technical]),
    }
    files = {f"{XGB_DIR}/{name}": data for name, data in xgb_files(model).items()}
    files |= {
        f"{XGB_TECHNICAL_DIR}/{name}": data for name, data in xgb_files(technical_model).items()
    }
    files[FUSION_FILE] = msgspec.json.format(msgspec.json.encode(fusion)) + b"\n"
    if pca is not None:
        files[PCA_FILE] = msgspec.json.format(msgspec.json.encode(pca)) + b"\n"
    seconds = time.perf_counter() - started
    holdout = {
        f"{m}_holdout_{k}": v for m, p in held_out.items() for k, v in summary(yh, p).items()
    }
    metrics = {
        **{f"xgb_oof_{k}": v for k, v in result.metrics.items()},
        **{f"xgb_technical_oof_{k}": v for k, v in alone.metrics.items()},
        **{f"clip_oof_{k}": v for k, v in summary(yf[covered], live["clip"]).items()},
        **holdout,
        "holdout_rows": float(held_rows.sum()),
        "holdout_base_rate": float(yh.mean()),
        "tabular_rows": float(fit_rows.sum()),
        "tabular_clip_seconds": scored_seconds,
        "tabular_seconds": seconds,
    }
    stage = {
        "source": source,
        "config": msgspec.to_builtins(tab),
        "horizon_bars": horizon,
        "bar_seconds": bar_seconds,
        "feature_names": list(names),
        "fusion": msgspec.to_builtins(fusion),
        "xgb_rounds": model.meta.best_iteration + 1,
        "importance_top": dict(sorted(model.meta.importance.items(), key=lambda kv: -kv[1])[:10]),
        "files": sorted(files),
    }
    labels = {"clip_oof": yf[covered], **{f"{m}_holdout": yh for m in held_out}}
    reasons = {f"{name}_auc": why for name, y in labels.items() if (why := unmeasured(y))}
    card = add_to_bundle(
        bundle, files=files, metrics=metrics, stages={"tabular": stage}, unmeasured=reasons
    )
    log.info(
        "tabular.trained",
        rows=int(fit_rows.sum()),
        holdout_rows=int(held_rows.sum()),
        xgb_oof_auc=round(result.metrics.get("auc", float("nan")), 4),
        **{f"{m}_holdout_auc": round(holdout[f"{m}_holdout_auc"], 4) for m in HELD_OUT_MODELS},
        fusion=fusion.method,
        seconds=round(seconds, 1),
    )
    return card


def with_drift(
    model: XgbModel,
    x: FloatArray,
    confidence: FloatArray,
    *,
    train_config: object,
    rows: int,
    source: str,
) -> XgbModel:
    """The trained model with its drift reference (its columns + the confidence, on the rows x)
    and provenance (training config, rows trained on, source) in its metadata."""
    names = [*model.feature_names, "confidence"]
    reference = drift_reference(np.column_stack([x, confidence]), names)
    model.meta = msgspec.structs.replace(
        model.meta,
        drift_reference=msgspec.to_builtins(reference),
        extra={
            "train_config": msgspec.to_builtins(train_config),
            "rows": rows,
            "source": source,
        },
    )
    return model


def fit_recalibration(p: FloatArray, y: FloatArray) -> Recalibration:
    """Platt on CLIP's logit (vlm_engine.metrics.fit_platt): identity when refused (reversing, one class)."""
    params = fit_platt(p, y, model="clip")
    return (
        Recalibration() if params is None else Recalibration(a=params.coef[0], b=params.intercept)
    )


def fit_fusion(
    tab: TabularConfig, probs: dict[str, FloatArray], y: FloatArray, ts: npt.NDArray[np.int64]
) -> FusionConfig:
    """The fusion (and CLIP's recalibration) fitted on the rows where every model has an out-of-fold prediction."""
    keep = np.all([np.isfinite(p) for p in probs.values()], axis=0)
    if keep.sum() < 40:
        msg = f"only {int(keep.sum())} out-of-fold rows to fit the fusion on: give more bars"
        raise XgbError(msg)
    maps = {"clip": fit_recalibration(probs["clip"][keep], y[keep])}
    calibrated = recalibrated(maps, probs)
    if tab.fusion == "select":
        config = select_fusion(tab, calibrated, y, ts, keep)
    elif tab.fusion == "weighted":
        config = FusionConfig(
            method="weighted",
            weights=dict(tab.weights),
            disagreement_penalty=tab.disagreement_penalty,
        )
    else:
        config = _stacking(tab, calibrated, y, keep)
    return msgspec.structs.replace(config, recalibrate=maps)


def _stacking(
    tab: TabularConfig, probs: dict[str, FloatArray], y: FloatArray, rows: BoolArray
) -> FusionConfig:
    return FusionConfig(
        method="stacking",
        stacking=fit_stacking({m: p[rows] for m, p in probs.items()}, y[rows]),
        weights=dict(tab.weights),
        disagreement_penalty=tab.disagreement_penalty,
    )


def select_fusion(
    tab: TabularConfig,
    probs: dict[str, FloatArray],
    y: FloatArray,
    ts: npt.NDArray[np.int64],
    keep: BoolArray,
) -> FusionConfig:
    """The candidate with the lowest log loss on the last third of `keep` (in time), refitted on all of it.

    Log loss, not AUC: a proper score, steadier on a few thousand rows of a small edge, and it
    counts a model's miscalibration against it (AUC picked weights that only noise favoured)."""
    index = np.flatnonzero(keep)
    cut = int(ts[index[int(index.size * 2 / 3)]])
    fit, select = keep & (ts < cut), keep & (ts >= cut)
    weighted = [
        FusionConfig(
            method="weighted",
            weights={"clip": round(float(w), 1), "xgb": round(1.0 - float(w), 1)},
            disagreement_penalty=tab.disagreement_penalty,
        )
        for w in np.linspace(0.0, 1.0, 11)
    ]
    held = {m: p[select] for m, p in probs.items()}
    candidates = [_stacking(tab, probs, y, fit), *weighted]
    scores = [summary(y[select], combine(c, held))["log_loss"] for c in candidates]
    best = int(np.nanargmin(scores))
    return _stacking(tab, probs, y, keep) if best == 0 else candidates[best]


def recalibrated(
    maps: Mapping[str, Recalibration], probs: Mapping[str, FloatArray]
) -> dict[str, FloatArray]:
    """Each model's probabilities through its map, as FusionEngine.recalibrated does row by row."""
    return {m: maps[m].apply_array(p) if m in maps else p for m, p in probs.items()}


def combine(config: FusionConfig, probs: Mapping[str, FloatArray]) -> FloatArray:
    """The fused probability of each row, as the live FusionEngine computes it (before smoothing)."""
    probs = recalibrated(config.recalibrate, probs)
    if config.method == "stacking" and config.stacking is not None:
        st = config.stacking
        z = st.intercept + sum(c * logit(probs[m]) for m, c in zip(st.models, st.coef, strict=True))
        return sigmoid(z)
    total = sum(config.weights.get(m, 0.0) for m in probs)
    return np.asarray(
        sum(config.weights.get(m, 0.0) * p for m, p in probs.items()) / total, dtype=np.float64
    )


def xgb_files(model: XgbModel) -> dict[str, bytes]:
    """The model's files as XgbModel.save writes them."""
    with tempfile.TemporaryDirectory(prefix="vlmtrader-xgb-") as tmp:
        model.save(Path(tmp))
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
