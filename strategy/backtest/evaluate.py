"""Honest out-of-sample evaluation on any bars: walk-forward XGBoost, fixed CLIP, fusion, backtests.

Every prediction that is scored or traded comes from a model fitted only on earlier data (purged
and embargoed walk-forward folds); every calibration map and stacking weight is fitted on earlier
out-of-fold rows only; CLIP is the bundle's fixed model, its P(up) taken through the bundle's
`fusion.recalibrate` exactly as the daemon's clip mode trades it. Rows the bundle was fitted on are
scored for no model. All models are scored on the same rows, with moving-block bootstrap intervals,
paired differences and a one-sentence verdict (evaluate_report.py); the backtest comparison
(XGBoost-only, CLIP-only, fused, rules, buy-and-hold) trades only the test period.

With CLIP, "xgb" is the XGBoost that also sees the CLIP columns (the fusion's input) and
"xgb_technical" the same XGBoost on the technical features alone: the XGBoost-only baseline.
"always_long" predicts the base rate of the rows before the scored period on every row.
The first walk-forward fold is a warm-up: its out-of-fold rows fit the calibration and stacking
that the later folds use; the later folds are scored (and traded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from strategy.backtest.compare import StrategyResult, run_comparison
from strategy.backtest.data import (
    Dataset,
    PrecomputedScorer,
    build_dataset,
    precompute_signals,
    signals_from_probabilities,
)
from strategy.backtest.engine import BacktestConfig, LookupScorer
from strategy.backtest.evaluate_report import model_metrics, predictions_frame, verdict
from strategy.bars import FloatArray, Window
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import FusionConfig, FusionEngine, fit_stacking
from strategy.ml_scorer import VisionModel, vision_columns
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.scoring import Scorer
from strategy.types import Bar
from vlm_engine.metrics import BootstrapConfig, base_rate, calibration_curve
from vlm_engine.shards import TaskMap
from vlm_engine.xgb.pca import PcaParams
from vlm_engine.xgb.train import TrainResult, XgbTrainConfig, train_xgb

BoolArray = npt.NDArray[np.bool_]


class EvaluationConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to fit and how to trade the test period."""

    horizon_bars: Annotated[int, msgspec.Meta(gt=0)] = 5
    features: FeatureConfig = msgspec.field(default_factory=FeatureConfig)
    train: XgbTrainConfig = msgspec.field(default_factory=XgbTrainConfig)
    fusion: FusionConfig = msgspec.field(default_factory=FusionConfig)
    rules: RuleScorerConfig = msgspec.field(default_factory=RuleScorerConfig)
    backtest: BacktestConfig = msgspec.field(default_factory=BacktestConfig)
    bootstrap: BootstrapConfig = msgspec.field(default_factory=BootstrapConfig)


class TrainedSpan(msgspec.Struct, frozen=True, kw_only=True):
    """The symbols and last bar time (epoch s) any fit of the bundle read (its card's trained_on)."""

    symbols: tuple[str, ...]
    end: int


class BundleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What evaluate needs to know about the bundle: its bar size and what it was fitted on
    (None: the bundle does not say)."""

    bar_seconds: int
    trained_on: TrainedSpan | None = None


class Evaluation(msgspec.Struct, kw_only=True):
    """Per-model OOS metrics and calibration curves, the comparison, and the OOS period."""

    model_metrics: dict[str, dict[str, Any]]
    calibration: dict[str, dict[str, list[float]]]
    results: dict[str, StrategyResult]
    test_start: int
    test_end: int
    rows: int
    test_rows: int
    fold_metrics: list[dict[str, float]] = msgspec.field(default_factory=list)
    importance: dict[str, float] = msgspec.field(default_factory=dict)
    base_rate: float = float("nan")
    horizon_bars: int = 0
    bar_seconds: int = 0
    bootstrap: dict[str, Any] = msgspec.field(default_factory=dict)
    differences: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    verdict: str = ""
    fusion: str = ""
    notes: list[str] = msgspec.field(default_factory=list)
    predictions: Any = None  # pandas DataFrame: see evaluate_report.predictions_frame


def _fuse_oos(
    probs: dict[str, FloatArray],
    y: FloatArray,
    ts: np.ndarray,
    symbols: Sequence[str],
    config: FusionConfig,
    fold_starts: Sequence[int],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Fused OOS probability per row in stream order; stacking refitted per fold on earlier OOF rows."""
    n = y.shape[0]
    fused = np.full(n, np.nan)
    disagreement = np.zeros(n)
    entropy = np.zeros(n)
    fold_of = np.searchsorted(np.asarray(fold_starts), ts, side="right") - 1
    engines: dict[int, FusionEngine] = {}
    smoothing: dict[str, float] = {}
    for k in sorted(set(fold_of.tolist())):
        if k < 0:
            continue
        cfg = config
        if config.method == "stacking":
            earlier = ts < fold_starts[k]
            try:
                params = fit_stacking({m: p[earlier] for m, p in probs.items()}, y[earlier])
                cfg = msgspec.structs.replace(config, stacking=params)
            except ValueError:  # no earlier OOF rows yet: fixed weights for this fold
                cfg = msgspec.structs.replace(config, method="weighted", stacking=None)
        engines[k] = FusionEngine(config=cfg)
    for i in range(n):
        k = int(fold_of[i])
        row = {m: float(p[i]) for m, p in probs.items()}
        if k < 0 or not all(np.isfinite(v) for v in row.values()):
            continue
        engine = engines[k]
        engine._smoothed = smoothing  # one smoothing state across folds
        f = engine.fuse(row, symbol=symbols[i])
        fused[i], disagreement[i], entropy[i] = f.p_up, f.disagreement, f.entropy
    return fused, disagreement, entropy


def clip_probabilities(
    p_raw: FloatArray, symbols: Sequence[str], fusion: FusionConfig
) -> FloatArray:
    """CLIP's P(up) as the daemon's clip mode trades it: through `fusion.recalibrate` and the
    smoothing of fusion.alone("clip") (what `LoadedBundle.scorer(mode="clip")` in daemon.model.loader does), in row order."""
    engine = FusionEngine(config=fusion.alone("clip"))
    out = np.full(p_raw.shape[0], np.nan)
    for i, p in enumerate(p_raw.tolist()):
        if np.isfinite(p):
            out[i] = engine.fuse({"clip": p}, symbol=symbols[i]).p_up
    return out


def _trained_on_rows(ds: Dataset, bundle: BundleInfo | None, notes: list[str]) -> BoolArray:
    """Rows the bundle was fitted on (same symbol, time <= trained_on.end); noted either way."""
    seen = np.zeros(ds.y.shape[0], dtype=bool)
    if bundle is None:
        return seen
    if bundle.trained_on is None:
        notes.append(
            "the bundle does not record what it was trained on: overlap with these bars is unknown"
        )
        return seen
    on = bundle.trained_on
    seen = np.isin(np.asarray(ds.symbols), list(on.symbols)) & (ds.ts <= on.end)
    if seen.any():
        notes.append(
            f"{int(seen.sum())} rows not scored for any model: the bundle was fitted on "
            f"{', '.join(sorted(set(np.asarray(ds.symbols)[seen].tolist())))} up to "
            f"{datetime.fromtimestamp(on.end, tz=UTC).isoformat()}"
        )
    return seen


def _bar_size_note(ds: Dataset, bundle: BundleInfo | None, vision: bool, notes: list[str]) -> None:
    if bundle is None or bundle.bar_seconds == ds.bar_seconds:
        return
    clip = (
        f"its CLIP scores charts of these bars (CLIP columns rebuilt at {ds.bar_seconds} s)"
        if vision
        else "it has no CLIP"
    )
    notes.append(
        f"the bundle was trained on {bundle.bar_seconds} s bars, these are {ds.bar_seconds} s bars: "
        f"{clip}; XGBoost and fusion are refitted walk-forward on these bars"
    )


def evaluate(
    batches: Sequence[Sequence[Bar]],
    config: EvaluationConfig,
    *,
    vision: VisionModel | None = None,
    pca: PcaParams | None = None,
    bundle: BundleInfo | None = None,
    extra_scorers: dict[str, Scorer] | None = None,
    progress: Callable[[int], None] | None = None,
    task_map: TaskMap | None = None,
) -> Evaluation:
    """Walk-forward OOS predictions for each model, their metrics, verdict and backtest comparison.

    task_map runs the walk-forward fits and the backtest contenders (default: here, in turn)."""
    store = config.backtest.bars
    engine = FeatureEngine(config=config.features)
    extra: Callable[[Sequence[Window]], tuple[tuple[str, ...], FloatArray]] | None = None
    clip_column: list[FloatArray] = []
    if vision is not None:

        def extra(windows: Sequence[Window]) -> tuple[tuple[str, ...], FloatArray]:
            scores = vision.score_windows(windows)
            clip_column.append(np.asarray(scores.p_up, dtype=np.float64))
            return vision_columns(scores, pca)

    ds: Dataset = build_dataset(batches, store, engine, horizon=config.horizon_bars, extra=extra)
    notes: list[str] = []
    _bar_size_note(ds, bundle, vision is not None, notes)
    labelled = ds.labelled()
    rows = np.flatnonzero(labelled)
    fold = np.full(ds.y.shape[0], -1, dtype=np.int64)

    def walk_forward(columns: np.ndarray) -> tuple[TrainResult, FloatArray, FloatArray]:
        result = train_xgb(
            ds.x[rows][:, columns],
            ds.y[rows],
            ts=ds.ts[rows],
            label_end=ds.label_end[rows],
            feature_names=tuple(np.asarray(ds.feature_names)[columns].tolist()),
            config=config.train,
            bar_seconds=ds.bar_seconds,
            horizon_bars=config.horizon_bars,
            task_map=task_map,
        )
        p, p_raw = np.full(ds.y.shape[0], np.nan), np.full(ds.y.shape[0], np.nan)
        p[rows], p_raw[rows] = result.oof, result.oof_raw
        fold[rows] = result.fold
        return result, p, p_raw

    result, p_xgb, p_xgb_raw = walk_forward(np.ones(len(ds.feature_names), dtype=bool))
    probs: dict[str, FloatArray] = {"xgb": p_xgb}
    raw: dict[str, FloatArray] = {"xgb": p_xgb_raw}
    technical = np.array([not n.startswith("clip_") for n in ds.feature_names])
    if not technical.all():
        _, probs["xgb_technical"], raw["xgb_technical"] = walk_forward(technical)
    covered = np.isfinite(p_xgb)
    if not covered.any():
        msg = "walk-forward produced no out-of-sample predictions: bring more bars"
        raise ValueError(msg)
    test_start = int(ds.ts[covered].min())
    test_end = int(ds.ts[covered].max())
    if clip_column:
        clip_raw = np.concatenate(clip_column)
        traded = clip_probabilities(clip_raw, ds.symbols, config.fusion)  # smoothing from bar 1
        raw["clip"] = np.where(ds.ts >= test_start, clip_raw, np.nan)
        probs["clip"] = np.where(ds.ts >= test_start, traded, np.nan)
    fold_starts = sorted(int(f["test_start"]) for f in result.fold_metrics) or [test_start]
    late = {m: p for m, p in (("xgb", p_xgb), ("clip", raw.get("clip"))) if p is not None}
    fused, disagreement, entropy = _fuse_oos(
        late, ds.y, ds.ts, ds.symbols, config.fusion, fold_starts
    )
    probs["fused"] = fused
    raw["fused"] = fused  # the fusion applies no calibration of its own to its output

    seen = _trained_on_rows(ds, bundle, notes)
    for p in (*probs.values(), *raw.values(), disagreement, entropy):
        p[seen] = np.nan  # neither scored nor traded
    # the first walk-forward fold is the warm-up of everything fitted on out-of-fold rows
    # (calibration, stacking): scored are the later folds, which all share those fits
    warm_up = fold == int(fold[fold >= 0].min())
    scored = labelled & ~seen & ~warm_up
    scored &= np.logical_and.reduce([np.isfinite(p) for p in probs.values()])
    if not scored.any():
        msg = (
            "no out-of-sample row is left to score after the first (warm-up) fold and the rows "
            "the bundle was fitted on: bring more bars"
        )
        raise ValueError(msg)
    before = labelled & (ds.ts < int(ds.ts[scored].min()))
    long_p = float(ds.y[before].mean()) if before.any() else 0.5
    probs["always_long"] = np.full(ds.y.shape[0], long_p)

    y, ts, row_fold = ds.y[scored], ds.ts[scored], fold[scored]
    scored_probs = {m: p[scored] for m, p in probs.items()}
    metrics, differences, boot = model_metrics(
        y, ts, row_fold, scored_probs, horizon_bars=config.horizon_bars, bootstrap=config.bootstrap
    )
    calibration = {}
    for m, p in scored_probs.items():
        mean_p, freq, count = calibration_curve(y, p)
        calibration[m] = {"mean_p": mean_p.tolist(), "freq": freq.tolist(), "count": count.tolist()}
    predictions = predictions_frame(
        np.asarray(ds.symbols)[scored].tolist(),
        ts,
        row_fold,
        y,
        scored_probs,
        {m: p[scored] for m, p in raw.items()},
    )

    scorers: dict[str, Scorer | LookupScorer] = {
        m: signals_from_probabilities(m, ds.symbols, ds.ts, probs[m])
        for m in ("xgb", "xgb_technical", "clip")
        if m in probs
    }
    scorers["fused"] = _fused_signals(ds, fused, disagreement, entropy, config.fusion)
    scorers["rules"] = precompute_signals(RuleScorer(config=config.rules), batches, store)
    for name, scorer in (extra_scorers or {}).items():
        scorers[name] = precompute_signals(scorer, batches, store)
    results = run_comparison(
        batches,
        scorers,
        config.backtest,
        trade_from=datetime.fromtimestamp(int(ts.min()), tz=UTC),
        progress=progress,
        task_map=task_map,
    )
    reads_clip = any(n.startswith("clip_") for n in ds.feature_names)
    return Evaluation(
        model_metrics=metrics,
        calibration=calibration,
        results=results,
        test_start=int(ts.min()),
        test_end=test_end,
        rows=int(rows.size),
        test_rows=int(scored.sum()),
        fold_metrics=result.fold_metrics,
        importance=result.model.meta.importance,
        base_rate=base_rate(y),
        horizon_bars=config.horizon_bars,
        bar_seconds=ds.bar_seconds,
        bootstrap=boot,
        differences=differences,
        verdict=verdict(metrics, differences),
        fusion=config.fusion.describe(xgb_reads_clip=reads_clip),
        notes=notes,
        predictions=predictions,
    )


def _fused_signals(
    ds: Dataset,
    fused: FloatArray,
    disagreement: FloatArray,
    entropy: FloatArray,
    config: FusionConfig,
) -> PrecomputedScorer:
    scorer = signals_from_probabilities(
        "fused", ds.symbols, ds.ts, fused, disagreement=disagreement, entropy=entropy
    )
    penalty = config.disagreement_penalty
    signals = {
        key: msgspec.structs.replace(
            s, confidence=s.confidence * max(0.0, 1.0 - penalty * s.disagreement)
        )
        for key, s in scorer.signals.items()
    }
    return PrecomputedScorer(name="fused", signals=signals)


def evaluation_summary(evaluation: Evaluation) -> dict[str, Any]:
    """A JSON-ready dict of the evaluation (curves and predictions left out)."""
    return {
        "verdict": evaluation.verdict,
        "fusion": evaluation.fusion,
        "notes": evaluation.notes,
        "base_rate": evaluation.base_rate,
        "horizon_bars": evaluation.horizon_bars,
        "bar_seconds": evaluation.bar_seconds,
        "bootstrap": evaluation.bootstrap,
        "differences": evaluation.differences,
        "test_start": datetime.fromtimestamp(evaluation.test_start, tz=UTC).isoformat(),
        "test_end": datetime.fromtimestamp(evaluation.test_end, tz=UTC).isoformat(),
        "rows": evaluation.rows,
        "test_rows": evaluation.test_rows,
        "model_metrics": evaluation.model_metrics,
        "fold_metrics": evaluation.fold_metrics,
        "backtest": {n: msgspec.to_builtins(r.metrics) for n, r in evaluation.results.items()},
    }
