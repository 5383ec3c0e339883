"""The explanation of a planted pattern names it: CLIP's top texts and the nearest training charts
of a bundle trained on the simulated market's planted patterns, on bars it never saw."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from daemon.explain.evidence import accepted, bundle_view, explain_batch
from strategy.backtest.data import frame_batches, iter_windows
from strategy.bars import BarStoreConfig
from strategy.market_sim import SimMarketConfig, simulate_frame
from tests.daemon.explain_helpers import PLANTED, WINDOW, buy_orders, ml_model, planted_bundle


def test_explanation_when_pattern_planted_then_top_texts_and_analogs_name_it() -> None:
    model = ml_model(planted_bundle())
    assert model.bundle is not None
    assert model.bundle.analogs is not None, "bootstrap builds the analog index"
    # Held out: another seed and a later year than the bundle's training market.
    market = SimMarketConfig(symbols=("SIMA", "SIMB"), pattern_rate=0.12, seed=99, patterns=PLANTED)
    frame = simulate_frame(market, datetime(2027, 1, 4, tzinfo=UTC), 900)
    planted = {
        (r.symbol, int(r.ts.timestamp())): r.pattern for r in frame.itertuples() if r.pattern
    }
    windows = [
        w
        for chunk in iter_windows(frame_batches(frame), BarStoreConfig(window=WINDOW))
        for w in chunk
        if (w.symbol, int(w.timestamps[-1])) in planted
    ]
    assert len(windows) >= 40
    signals = model.scorer.score(windows)
    orders = buy_orders(windows, "P")
    # One window per symbol per scoring call in the daemon; here each window is its own batch.
    top1 = top3 = analog_hits = analog_total = 0
    view = bundle_view(model.bundle)
    for i, w in enumerate(windows):
        model.scorer.score([w])
        (doc,) = explain_batch(
            scorer=model.scorer,
            evidence=getattr(model.scorer, "evidence", None),
            signals=[signals[i]],
            decision=accepted([orders[i]]),
            view=view,
            put_chart=lambda png: "0" * 64,
            top_k=3,
            analogs_k=5,
        )
        pattern = planted[(w.symbol, int(w.timestamps[-1]))]
        texts = [t.pattern for t in doc.texts]
        top1 += texts[0] == pattern
        top3 += pattern in texts
        analog_hits += sum(pattern in a.patterns for a in doc.analogs)
        analog_total += len(doc.analogs)
    n = len(windows)
    # Six texts (two per class: none and the two patterns); chance of the right class on top is 1/3.
    assert top3 / n >= 0.8, f"planted pattern among CLIP's top-3 texts in {top3}/{n}"
    assert top1 / n >= 0.6, f"planted pattern CLIP's top text in {top1}/{n}"
    assert analog_total == 5 * n
    assert analog_hits / analog_total > 0.5, (
        f"analogs of the planted pattern: {analog_hits}/{analog_total}"
    )
    assert np.isfinite([a.similarity for a in doc.analogs]).all()
