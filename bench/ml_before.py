"""The ML scorer's order path as it was before this round (issue 16, fifth round), for the
same-run "before" figures of bench_ml_pipeline.py: CLIP started before the features, the batch cut
into one chunk per worker, the pool's threads each scoring their own chunk and the caller the
last one once its features are done, however late a pool thread wakes (TwoHalvesVision); the
fusion's outcome monitor updated on the path (ObservedOnPath). before_scorer() puts them
together. The signals are the same as the "after" path's (tests/daemon/model/test_ml_path.py). fuse_rows: the
fusion as it ran two rounds earlier (row by row), for the stage table's fusion rows."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from daemon.model.vision import vision_scores
from strategy.bars import FloatArray, Window
from strategy.fusion import FUSED, Fused, FusionEngine, Observation
from strategy.ml_scorer import MLScorer, VisionScores

if TYPE_CHECKING:
    from daemon.model.loader import LoadedBundle
    from vlm_engine.infer import ChartEngine


def before_scorer(models: LoadedBundle) -> MLScorer:
    """The bundle's scorer as it ran before this round: TwoHalvesVision, ObservedOnPath."""
    scorer = models.scorer(vision=TwoHalvesVision(models.engine))
    scorer.fusion = ObservedOnPath(config=scorer.fusion.config)
    return scorer


class ObservedOnPath(FusionEngine):
    """FusionEngine whose outcome monitor is updated in fuse_columns(), on the order path."""

    def fuse_columns(self, *args: Any, **kwargs: Any) -> tuple[list[Fused], Observation | None]:
        out, observation = super().fuse_columns(*args, **kwargs)
        if observation is not None:
            self.observe_columns(observation)
        return out, None


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
    """ChartEngine._chunks as it was: one per worker, each at least 4 charts, at most max_batch."""
    size = max(-(-n // engine.workers), 4) if engine.workers > 1 else n
    size = min(size, engine.config.max_batch)
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


class TwoHalvesVision:
    """daemon.model.vision.ClipVision over ChartEngine.start_batch as it was: all chunks but the
    last handed to the pool at start(), the last one scored by the caller when it joins, then
    a wait on each pool chunk."""

    def __init__(self, engine: ChartEngine) -> None:
        self.engine = engine
        self.render_seconds = 0.0

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        return self.start(windows)()

    def start(self, windows: Sequence[Window]) -> Callable[[], VisionScores]:
        from vlm_engine.infer.engine import _pool

        engine = self.engine
        items = [w.tail(engine.spec.bars_needed) for w in windows]

        def render_and_score(rows: slice) -> tuple[Any, ...]:
            started = time.perf_counter()
            images = engine.render(items[rows])
            rendered = time.perf_counter() - started
            return engine.embed(images), rendered, images

        chunks = one_chunk_per_worker(engine, len(items))
        parallel = min(len(chunks), engine.workers)
        if parallel <= 1 or len(chunks) > engine.workers:
            parts_now = [render_and_score(rows) for rows in chunks]
            pending: list[Any] = []
        else:
            pending = [_pool(engine.workers).submit(render_and_score, r) for r in chunks[:-1]]
            parts_now = []

        def join() -> VisionScores:
            parts = parts_now or [*(f.result() for f in pending), render_and_score(chunks[-1])]
            batch = engine._merge(parts, parallel)  # type: ignore[arg-type]
            self.render_seconds += batch.render_seconds
            return vision_scores(batch)

        return join
