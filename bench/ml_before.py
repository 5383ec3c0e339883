"""The ML scorer's order path as it was before this round of issue 16's latency work, for the
same-run "before" figures of bench_ml_pipeline.py: the technical features first, then every CLIP
chunk handed to the pool while the calling thread waits (PooledVision: no overlap, one hand-off
and wake-up per chunk), then XGBoost and fusion. The signals are the same as the "after" path's
(tests/daemon/model/test_ml_path.py). fuse_rows: the fusion as it ran one round earlier (row by
row), for the stage table's fusion rows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from daemon.model.vision import vision_scores
from strategy.bars import FloatArray, Window
from strategy.fusion import FUSED, Fused, FusionEngine
from strategy.ml_scorer import VisionScores

if TYPE_CHECKING:
    from vlm_engine.infer import ChartEngine


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


class PooledVision:
    """daemon.model.vision.ClipVision as it ran before: no start() (so MLScorer.model_rows scores
    it after the features), and every chunk through the engine's pool while the caller waits."""

    def __init__(self, engine: ChartEngine) -> None:
        self.engine = engine
        self.render_seconds = 0.0

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        from vlm_engine.infer.engine import _pool

        engine = self.engine
        items = [w.tail(engine.spec.bars_needed) for w in windows]

        def render_and_score(rows: slice) -> tuple:  # type: ignore[type-arg]
            started = time.perf_counter()
            images = engine.render(items[rows])
            rendered = time.perf_counter() - started
            return (*engine._score_chunk(images), rendered, images)

        chunks = engine._chunks(len(items))
        parallel = min(len(chunks), engine.workers)
        if parallel > 1:
            parts = list(_pool(engine.workers).map(render_and_score, chunks))
        else:
            parts = [render_and_score(rows) for rows in chunks]
        batch = engine._merge(parts, parallel)
        self.render_seconds += batch.render_seconds
        return vision_scores(batch)
