"""Direction AUC of the bundle's models on held-out simulated bars: fused vs CLIP-only vs XGBoost-only.

The bars come from a market seed neither the CLIP (seed) nor the XGBoost/fusion stage (seed + 1) of
`vlmtrader model bootstrap` saw; the label is the close `horizon` bars later above the close now.
Every model is the bundle's fixed model (no refitting). Goal (issue 5): fused AUC >= the better of
CLIP-only and XGBoost-only. Also printed on the planted-pattern bars alone, and the same rows'
figures the bootstrap recorded in the model card (its out-of-fold holdout).

    .venv/bin/python bench/bench_ml_auc.py [--bundle state/bundles/default] [--bars 2500]
"""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np

from daemon.cli_model import BootstrapConfig
from daemon.log_setup import configure_logging
from daemon.ml_loader import CachedVision, load_bundle_models
from strategy.backtest.data import forward_labels, frame_batches, iter_windows
from strategy.bars import BarStoreConfig
from strategy.clip_scorer import ClipVision
from vlm_engine.xgb.metrics import summary

START = datetime(2025, 6, 2, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("state/bundles/default"))
    parser.add_argument("--bars", type=int, default=2500, help="bars per symbol")
    parser.add_argument("--seed", type=int, default=101)
    args = parser.parse_args()
    configure_logging(level="warning", fmt="json", stream=io.StringIO())
    from strategy.market_sim import simulate_frame

    models = load_bundle_models(args.bundle)
    market = msgspec.structs.replace(BootstrapConfig().market, seed=args.seed)
    frame = simulate_frame(market, START, args.bars)
    planted = {
        (s, int(t.timestamp()))
        for s, t, p in zip(frame["symbol"], frame["ts"], frame["pattern"], strict=True)
        if p
    }
    batches = frame_batches(frame)
    horizon = models.xgb.meta.horizon_bars
    labels = forward_labels(batches, horizon)
    store = BarStoreConfig(window=max(64, models.bars_needed), bar_seconds=market.bar_seconds)
    vision = CachedVision(inner=ClipVision(server=models.server))
    scorer = models.scorer(vision=vision)
    p: dict[str, list[float]] = {"clip": [], "xgb": [], "fused": []}
    y: list[float] = []
    is_pattern: list[bool] = []
    for windows in iter_windows(batches, store):
        _, probs = scorer.model_rows(windows)
        fused = [s.p_up for s in scorer.score(windows)]
        for i, w in enumerate(windows):
            key = (w.symbol, int(w.timestamps[-1]))
            label, _ = labels.get(key, (float("nan"), 0))
            y.append(label)
            is_pattern.append(key in planted)
            p["clip"].append(float(probs["clip"][i]))
            p["xgb"].append(float(probs["xgb"][i]))
            p["fused"].append(fused[i])
    ya = np.asarray(y)
    mask = np.asarray(is_pattern)
    print(
        f"bundle {models.bundle_id}: fusion {models.fusion.method}, held-out market seed {args.seed}, "
        f"{len(market.symbols)} symbols x {args.bars} bars, horizon {horizon}"
    )
    print(
        f"{'model':>6} {'auc':>7} {'brier':>7} {'ece':>7} {'rows':>7} {'pattern auc':>12} {'rows':>6}"
    )
    aucs = {}
    for name, values in p.items():
        pa = np.asarray(values)
        m = summary(ya, pa)
        mp = summary(ya[mask], pa[mask])
        aucs[name] = m["auc"]
        print(
            f"{name:>6} {m['auc']:>7.4f} {m['brier']:>7.4f} {m['ece']:>7.4f} {int(m['count']):>7} "
            f"{mp['auc']:>12.4f} {int(mp['count']):>6}"
        )
    best = max(aucs["clip"], aucs["xgb"])
    verdict = "met" if aucs["fused"] >= best else "NOT met"
    print(
        f"fused - max(clip, xgb) = {aucs['fused'] - best:+.4f}  (goal fused >= the better: {verdict})"
    )
    card = models.card.metrics
    if "fused_holdout_auc" in card:
        print(
            "card (bootstrap OOF holdout): "
            + "  ".join(f"{m} {card[f'{m}_holdout_auc']:.4f}" for m in ("clip", "xgb", "fused"))
        )


if __name__ == "__main__":
    main()
