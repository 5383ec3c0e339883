"""Direction AUC of the bundle's models on held-out simulated bars: fused vs CLIP-only vs XGBoost-only.

The bars come from a market seed neither the CLIP (seed) nor the XGBoost/fusion stage (seed + 1) of
`vlmtrader model bootstrap` saw; the label is the close `horizon` bars later above the close now.
Every model is the bundle's fixed model (no refitting):
  clip           CLIP alone (P(up) from the direction prompts, through the fusion's recalibration)
  xgb_technical  XGBoost on the technical features alone: the XGBoost-only model
  xgb            XGBoost on the technical features + CLIP's outputs (the fusion's input)
  fused          the daemon's signal: clip and xgb through the bundle's fitted fusion
Goal (issue 5): fused AUC >= the better of CLIP-only and XGBoost-only; the difference is printed
with a 95% paired bootstrap interval (rows resampled together). Also printed on the
planted-pattern bars alone, and the bootstrap's own out-of-fold holdout from the model card.

The default bootstrap market plants candlestick patterns and chart shapes no TA-Lib candlestick
function names (double bottom / top, strategy.market_sim.CHART_SHAPES): what the chart adds when
it holds something the technical features do not flag ("shape auc"). --scenario candles removes
the shapes, builds a bundle for that market with the default bootstrap settings
(state/bundles/candles, once) and evaluates it there: an edge the technical features see as well.

    .venv/bin/python bench/bench_ml_auc.py [--bundle DIR] [--bars 2500] [--scenario default|candles]
"""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
from harness import Session

from daemon.log_setup import configure_logging
from daemon.model.loader import load_bundle
from daemon.model.vision import CachedVision, ClipVision
from daemon.training import BootstrapConfig, bootstrap
from strategy.backtest.data import forward_labels, frame_batches, iter_windows
from strategy.bars import BarStoreConfig
from vlm_engine.metrics import auc, auc_text, summary

START = datetime(2025, 6, 2, tzinfo=UTC)


def main() -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="default: state/bundles/<scenario>")
    parser.add_argument("--bars", type=int, default=2500, help="bars per symbol")
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--scenario", choices=("default", "candles"), default="default")
    args = parser.parse_args()
    configure_logging(level="warning", fmt="json", stream=io.StringIO())
    from strategy.market_sim import simulate_frame
    from strategy.sim_patterns import ALL_PATTERNS, CHART_SHAPES

    config = BootstrapConfig()
    if args.scenario == "candles":
        candles = msgspec.structs.replace(config.market, patterns=ALL_PATTERNS)
        config = msgspec.structs.replace(config, market=candles)
    bundle = args.bundle or Path("state/bundles") / args.scenario
    if not (bundle / "model_card.json").is_file():
        print(f"no bundle at {bundle}: building one for the {args.scenario} market (a few minutes)")
        bootstrap(config, bundle)
    models = load_bundle(bundle)
    market = msgspec.structs.replace(config.market, seed=args.seed)
    frame = simulate_frame(market, START, args.bars)
    planted = {
        (s, int(t.timestamp())): p
        for s, t, p in zip(frame["symbol"], frame["ts"], frame["pattern"], strict=True)
        if p
    }
    batches = frame_batches(frame)
    horizon = models.xgb.meta.horizon_bars
    labels = forward_labels(batches, horizon)
    store = BarStoreConfig(window=max(64, models.bars_needed), bar_seconds=market.bar_seconds)
    vision = CachedVision(inner=ClipVision(engine=models.engine))
    scorer = models.scorer(vision=vision)
    alone = models.scorer(mode="xgb", vision=vision) if models.xgb_technical else None
    p: dict[str, list[float]] = {"clip": [], "xgb_technical": [], "xgb": [], "fused": []}
    y: list[float] = []
    is_pattern: list[bool] = []
    is_shape: list[bool] = []
    for windows in iter_windows(batches, store):
        _, probs = scorer.model_rows(windows)
        fused = [s.p_up for s in scorer.score(windows)]
        technical = alone.model_rows(windows)[1]["xgb"] if alone else np.full(len(windows), np.nan)
        for i, w in enumerate(windows):
            key = (w.symbol, int(w.timestamps[-1]))
            label, _ = labels.get(key, (float("nan"), 0))
            y.append(label)
            is_pattern.append(key in planted)
            is_shape.append(planted.get(key) in CHART_SHAPES)
            p["clip"].append(scorer.fusion.recalibrated({"clip": float(probs["clip"][i])})["clip"])
            p["xgb"].append(float(probs["xgb"][i]))
            p["xgb_technical"].append(float(technical[i]))
            p["fused"].append(fused[i])
    ya = np.asarray(y)
    mask = np.asarray(is_pattern)
    shape_mask = np.asarray(is_shape)
    print(
        f"bundle {models.bundle_id}: fusion {models.fusion.method}, held-out market seed {args.seed}, "
        f"{len(market.symbols)} symbols x {args.bars} bars, horizon {horizon}"
    )
    print(
        f"{'model':>13} {'auc':>7} {'brier':>7} {'ece':>7} {'rows':>7} {'pattern auc':>12} {'rows':>6}"
        + (f" {'shape auc':>10} {'rows':>6}" if shape_mask.any() else "")
    )
    aucs = {}
    for name, values in p.items():
        pa = np.asarray(values)
        m = summary(ya, pa)
        mp = summary(ya[mask], pa[mask])
        aucs[name] = m["auc"]
        shapes = ""
        if shape_mask.any():
            ms = summary(ya[shape_mask], pa[shape_mask])
            shapes = f" {auc_text(ya[shape_mask], pa[shape_mask]):>10} {int(ms['n']):>6}"
        print(
            f"{name:>13} {auc_text(ya, pa):>7} {m['brier']:>7.4f} {m['ece']:>7.4f} {int(m['n']):>7} "
            f"{auc_text(ya[mask], pa[mask]):>12} {int(mp['n']):>6}{shapes}"
        )
    singles = [m for m in ("clip", "xgb_technical") if np.isfinite(aucs[m])]
    best_name = max(singles, key=lambda m: aucs[m])
    gain = aucs["fused"] - aucs[best_name]
    low, high = _paired_interval(ya, np.asarray(p["fused"]), np.asarray(p[best_name]))
    verdict = "met" if gain >= 0 else "NOT met"
    print(
        f"fused - {best_name} (the better single model) = {gain:+.4f}  95% CI [{low:+.4f}, {high:+.4f}]"
        f"  (goal fused >= the better: {verdict})"
    )
    card = models.card.metrics
    if "fused_holdout_auc" in card:
        print(
            "card (bootstrap OOF holdout): "
            + "  ".join(
                f"{m} {card[f'{m}_holdout_auc']:.4f}"
                for m in ("clip", "xgb_technical", "xgb", "fused")
                if f"{m}_holdout_auc" in card
            )
        )
    return {**{f"{m}_auc": float(a) for m, a in aucs.items()}, "fused_minus_best_auc": gain}


def _paired_interval(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, *, draws: int = 300, seed: int = 0
) -> tuple[float, float]:
    """95% interval of auc(a) - auc(b) over rows resampled with replacement (both on the same rows)."""
    keep = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)
    y, a, b = y[keep], a[keep], b[keep]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        i = rng.integers(0, y.size, y.size)
        diffs.append(auc(y[i], a[i]) - auc(y[i], b[i]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


if __name__ == "__main__":
    with Session("ml_auc") as bench:
        bench.measured_once(main(), why="AUCs on fixed seeds and a fixed bundle are deterministic")
