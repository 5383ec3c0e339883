"""The ML scorer's order path as it was before issue 16's latency work, for the same-run "before"
figures of bench_ml_pipeline.py: fusion row by row (fuse() + observe() per window), the drift
update and the top reasons computed before the signals go back to the pipeline. The signals are
the same as MLScorer.score()'s (tests/strategy/test_ml_scorer.py pins the row-by-row path)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategy.bars import FloatArray, Window
from strategy.fusion import FUSED, Fused, FusionEngine
from strategy.ml_scorer import Deferred, MLScorer, usable_rows
from strategy.scoring import rejected_signal
from strategy.types import Signal


def fuse_rows(
    fusion: FusionEngine, symbols: Sequence[str], closes: FloatArray, probs: dict[str, FloatArray]
) -> list[Fused]:
    """FusionEngine.fuse_observe as it ran before: fuse() and observe() one row at a time."""
    out = []
    for i, symbol in enumerate(symbols):
        row = {m: float(p[i]) for m, p in probs.items()}
        fused = fusion.fuse(row, symbol=symbol)
        fusion.observe(symbol, float(closes[i]), {**row, FUSED: fused.p_up})
        out.append(fused)
    return out


def row_by_row_score(scorer: MLScorer, windows: Sequence[Window]) -> list[Signal]:
    """MLScorer.score as the order path ran it before: fuse() and observe() per row, drift, then
    the top reasons, all before the signals are returned (the "before" rows and the ml-before
    live run); the probabilities are the same as score()'s (tests/strategy/test_ml_scorer.py)."""
    x, probs = scorer.model_rows(windows)
    usable = usable_rows(x)
    confidences = np.zeros(len(windows))
    signals = []
    for i, w in enumerate(windows):
        if not usable[i]:
            signals.append(rejected_signal(w, scorer.name, scorer._out_of_range(x[i], w)))
            continue
        closes = np.array([w.close[-1]])
        (fused,) = fuse_rows(
            scorer.fusion, [w.symbol], closes, {m: p[i : i + 1] for m, p in probs.items()}
        )
        confidences[i] = fused.confidence
        signals.append(
            Signal(
                symbol=w.symbol,
                ts=w.ts,
                p_up=fused.p_up,
                confidence=fused.confidence,
                scorer=scorer.name,
                disagreement=fused.disagreement,
                entropy=fused.entropy,
            )
        )
    # the drift update and the top reasons, before the signals are returned
    left = Deferred(x=x, usable=usable, confidences=confidences, ts=windows[-1].ts)
    return scorer.finish(signals, left)


class RowByRowScorer:
    """The Scorer the live pipeline ran before (no score_deferred: reasons before the orders)."""

    blocking = True

    def __init__(self, inner: MLScorer) -> None:
        self.inner = inner
        self.name = inner.name
        self.vision = inner.vision  # the pipeline's charts.rendered timing reads it

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        return row_by_row_score(self.inner, windows)
