"""The ML scorer's order path as it was before this round (issue 16, sixth round), for the
same-run "before" figures of bench_ml_pipeline.py: CLIP started before the features, the batch cut
into one chunk per worker, each chunk drawn and embedded by whichever thread took it (the pool's
thread while the caller computes its features, the caller once it joins), so a pool thread drew
its charts while the caller's features held the GIL (QueueVision, ChartEngine.start_batch as it
was). before_scorer() puts it in the bundle's scorer. The signals are the same as the "after"
path's when the chunks are (tests/daemon/model/test_ml_path.py). fuse_rows: the fusion as it ran
two rounds earlier (row by row), for the stage table's fusion rows."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from daemon.model.vision import vision_scores
from strategy.bars import FloatArray, Window
from strategy.fusion import FUSED, Fused, FusionEngine
from strategy.ml_scorer import MLScorer, VisionScores

if TYPE_CHECKING:
    from daemon.model.loader import LoadedBundle
    from vlm_engine.infer import ChartEngine


def before_scorer(models: LoadedBundle) -> MLScorer:
    """The bundle's scorer as it ran before this round: QueueVision."""
    return models.scorer(vision=QueueVision(models.engine))


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


def one_chunk_per_worker(engine: ChartEngine, n: int) -> list[slice]:
    """ChartEngine._chunks as it was: one per worker while each keeps 4 charts on average, at
    most max_batch."""
    size = n
    if engine.workers > 1:
        size = -(-n // min(engine.workers, max(1, n // 4)))
    size = max(1, min(size, engine.config.max_batch))
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


class QueueVision:
    """daemon.model.vision.ClipVision over ChartEngine.start_batch as it was: the pool's threads
    start taking chunks (draw, then embed) at start(), the caller takes what is left when it
    joins; a pool thread that has not started by then is cancelled."""

    def __init__(self, engine: ChartEngine) -> None:
        self.engine = engine
        self.render_seconds = 0.0

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        return self.start(windows)()

    def start(self, windows: Sequence[Window]) -> Callable[[], VisionScores]:
        engine = self.engine
        items = [w.tail(engine.spec.bars_needed) for w in windows]

        def render_and_score(rows: slice) -> Any:
            started = time.perf_counter()
            images = engine.render(items[rows])
            rendered = time.perf_counter() - started
            return engine.embed(images), rendered, images

        join = engine._start(one_chunk_per_worker(engine, len(items)), render_and_score)

        def scores() -> VisionScores:
            batch = join()
            self.render_seconds += batch.render_seconds
            return vision_scores(batch)

        return scores
