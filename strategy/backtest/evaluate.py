"""Honest out-of-sample evaluation on any bars: walk-forward XGBoost, fixed CLIP, fusion, backtests.

Every prediction that is scored or traded comes from a model fitted only on earlier data (purged
and embargoed walk-forward folds); CLIP is the bundle's fixed model; stacking weights are fitted
on earlier out-of-fold predictions only; nothing is tuned on the test period. The backtest
comparison (XGBoost-only, CLIP-only, fused, rules, buy-and-hold) trades only the test period.

With CLIP, "xgb" is the XGBoost that also sees the CLIP columns (the fusion's input) and
"xgb_technical" the same XGBoost on the technical features alone: the XGBoost-only baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import numpy as np

from strategy.backtest.compare import StrategyResult, run_comparison
from strategy.backtest.data import (
    Dataset,
    PrecomputedScorer,
    build_dataset,
    precompute_signals,
    signals_from_probabilities,
)
from strategy.backtest.engine import BacktestConfig, LookupScorer
from strategy.bars import FloatArray, Window
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import FusionConfig, FusionEngine, fit_stacking
from strategy.ml_scorer import VisionModel, vision_columns
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.scoring import Scorer
from strategy.types import Bar
from vlm_engine.xgb.metrics import calibration_curve, summary
from vlm_engine.xgb.pca import PcaParams
from vlm_engine.xgb.train import TrainResult, XgbTrainConfig, train_xgb


class EvaluationConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to fit and how to trade the test period."""

    horizon_bars: Annotated[int, msgspec.Meta(gt=0)] = 5
    features: FeatureConfig = msgspec.field(default_factory=FeatureConfig)
    train: XgbTrainConfig = msgspec.field(default_factory=XgbTrainConfig)
    fusion: FusionConfig = msgspec.field(default_factory=FusionConfig)
    rules: RuleScorerConfig = msgspec.field(default_factory=RuleScorerConfig)
    backtest: BacktestConfig = msgspec.field(default_factory=BacktestConfig)


class Evaluation(msgspec.Struct, kw_only=True):
    """Per-model OOS metrics and calibration curves, the comparison, and the OOS period."""

    model_metrics: dict[str, dict[str, float]]
    calibration: dict[str, dict[str, list[float]]]
    results: dict[str, StrategyResult]
    test_start: int
    test_end: int
    rows: int
    test_rows: int
    fold_metrics: list[dict[str, float]] = msgspec.field(default_factory=list)
    importance: dict[str, float] = msgspec.field(default_factory=dict)


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


def evaluate(
    batches: Sequence[Sequence[Bar]],
    config: EvaluationConfig,
    *,
    vision: VisionModel | None = None,
    pca: PcaParams | None = None,
    extra_scorers: dict[str, Scorer] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Walk-forward OOS predictions for each model, their metrics, and the backtest comparison."""
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
    labelled = ds.labelled()
    rows = np.flatnonzero(labelled)

    def walk_forward(columns: np.ndarray) -> tuple[TrainResult, FloatArray]:
        result = train_xgb(
            ds.x[rows][:, columns],
            ds.y[rows],
            ts=ds.ts[rows],
            label_end=ds.label_end[rows],
            feature_names=tuple(np.asarray(ds.feature_names)[columns].tolist()),
            config=config.train,
            bar_seconds=ds.bar_seconds,
            horizon_bars=config.horizon_bars,
        )
        p = np.full(ds.y.shape[0], np.nan)
        p[rows] = result.oof
        return result, p

    result, p_xgb = walk_forward(np.ones(len(ds.feature_names), dtype=bool))
    technical = np.array([not n.startswith("clip_") for n in ds.feature_names])
    p_technical = walk_forward(technical)[1] if not technical.all() else None
    covered = np.isfinite(p_xgb)
    if not covered.any():
        msg = "walk-forward produced no out-of-sample predictions: bring more bars"
        raise ValueError(msg)
    test_start = int(ds.ts[covered].min())
    test_end = int(ds.ts[covered].max())
    probs: dict[str, FloatArray] = {"xgb": p_xgb}
    if clip_column:
        p_clip = np.concatenate(clip_column)
        p_clip = np.where(ds.ts >= test_start, p_clip, np.nan)
        probs["clip"] = p_clip
    fold_starts = sorted(int(f["test_start"]) for f in result.fold_metrics) or [test_start]
    fused, disagreement, entropy = _fuse_oos(
        probs, ds.y, ds.ts, ds.symbols, config.fusion, fold_starts
    )
    probs["fused"] = fused
    if p_technical is not None:
        probs["xgb_technical"] = p_technical

    test = (ds.ts >= test_start) & labelled
    model_metrics = {m: summary(ds.y[test], p[test]) for m, p in probs.items()}
    calibration = {}
    for m, p in probs.items():
        mean_p, freq, count = calibration_curve(ds.y[test], p[test])
        calibration[m] = {"mean_p": mean_p.tolist(), "freq": freq.tolist(), "count": count.tolist()}

    scorers: dict[str, Scorer | LookupScorer] = {}
    scorers["xgb"] = signals_from_probabilities("xgb", ds.symbols, ds.ts, p_xgb)
    if p_technical is not None:
        scorers["xgb_technical"] = signals_from_probabilities(
            "xgb_technical", ds.symbols, ds.ts, p_technical
        )
    if "clip" in probs:
        scorers["clip"] = signals_from_probabilities("clip", ds.symbols, ds.ts, probs["clip"])
    scorers["fused"] = _fused_signals(ds, fused, disagreement, entropy, config.fusion)
    scorers["rules"] = precompute_signals(RuleScorer(config=config.rules), batches, store)
    for name, scorer in (extra_scorers or {}).items():
        scorers[name] = precompute_signals(scorer, batches, store)
    results = run_comparison(
        batches,
        scorers,
        config.backtest,
        trade_from=datetime.fromtimestamp(test_start, tz=UTC),
        progress=progress,
    )
    return Evaluation(
        model_metrics=model_metrics,
        calibration=calibration,
        results=results,
        test_start=test_start,
        test_end=test_end,
        rows=int(rows.size),
        test_rows=int(test.sum()),
        fold_metrics=result.fold_metrics,
        importance=result.model.meta.importance,
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
    """A JSON-ready dict of the evaluation (curves left out)."""
    return {
        "test_start": datetime.fromtimestamp(evaluation.test_start, tz=UTC).isoformat(),
        "test_end": datetime.fromtimestamp(evaluation.test_end, tz=UTC).isoformat(),
        "rows": evaluation.rows,
        "test_rows": evaluation.test_rows,
        "model_metrics": evaluation.model_metrics,
        "fold_metrics": evaluation.fold_metrics,
        "backtest": {n: msgspec.to_builtins(r.metrics) for n, r in evaluation.results.items()},
    }
