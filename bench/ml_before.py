"""The ML scorer's order path as it was before this round (issue 16, seventh round), for the
same-run "before" figures of bench_ml_pipeline.py and bench_ml_arms.py: the calling thread drew
the first chunk, handed it to the pool, drew the rest, computed the features and embedded its own
chunk (the last) at the join; the pool thread, woken while the caller drew and computed features,
waited for the GIL before it could start embedding (HandOffVision, ChartEngine.start_batch as it
was at 6bdb383). The chunks are the same as the "after" path's, so the signals are identical
(tests/daemon/model/test_ml_path.py pins the after path to the sequential one).
fuse_rows: the fusion as it ran two rounds earlier (row by row), for the stage table's fusion
rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import wait
from typing import TYPE_CHECKING

import numpy as np

from daemon.model.vision import vision_scores
from strategy.bars import FloatArray, Window
from strategy.fusion import FUSED, Fused, FusionEngine
from strategy.ml_scorer import MLScorer, VisionScores
from vlm_engine.infer.engine import CALLER_SHARE, _pool

if TYPE_CHECKING:
    from daemon.model.loader import LoadedBundle
    from vlm_engine.infer import ChartEngine


def before_scorer(models: LoadedBundle) -> MLScorer:
    """The bundle's scorer as it ran before this round: HandOffVision."""
    return models.scorer(vision=HandOffVision(models.engine))


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


class _ReadyQueue:
    """The chunk queue as it was: chunks handed out in order, each once it is drawn."""

    def __init__(self, n: int) -> None:
        self.next, self.n, self.ready = 0, n, 1
        self.cond = threading.Condition()

    def take(self) -> int | None:
        with self.cond:
            while self.next >= self.ready and self.next < self.n:
                self.cond.wait()
            if self.next >= self.n:
                return None
            self.next += 1
            return self.next - 1

    def release(self, count: int) -> None:
        with self.cond:
            self.ready = count
            self.cond.notify_all()


class HandOffVision:
    """daemon.model.vision.ClipVision over ChartEngine.start_batch as it was (the engine's
    chunks, its pool; the error paths left out: the bench draws good charts)."""

    def __init__(self, engine: ChartEngine) -> None:
        self.engine = engine
        self.render_seconds = 0.0

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        return self.start(windows)()

    def start(self, windows: Sequence[Window]) -> Callable[[], VisionScores]:
        engine = self.engine
        items = [w.tail(engine.spec.bars_needed) for w in windows]
        chunks = engine._chunks(len(items), caller_share=CALLER_SHARE)  # no minimum to split
        if min(len(chunks), engine.workers) <= 1:
            return lambda: vision_scores(engine._render_then_score(items))
        spec = engine.spec
        images = np.empty((len(items), spec.height, spec.width, 3), dtype=np.uint8)
        started = time.perf_counter()
        engine.render(items[chunks[0]], out=images[chunks[0]])
        queue = _ReadyQueue(len(chunks))
        parts: list[np.ndarray | None] = [None] * len(chunks)

        def take_chunks() -> int:
            taken = 0
            while (i := queue.take()) is not None:
                parts[i] = engine.embed(images[chunks[i]])
                taken += 1
            return taken

        helpers = min(len(chunks), engine.workers) - 1
        futures = [_pool(engine.workers).submit(take_chunks) for _ in range(helpers)]
        rest = slice(chunks[0].stop, len(items))
        engine.render(items[rest], out=images[rest])
        queue.release(len(chunks))
        rendered = time.perf_counter() - started

        def scores() -> VisionScores:
            take_chunks()
            running = [f for f in futures if not f.cancel()]
            wait(running)
            for f in running:
                f.result()
            batch = engine._merge(
                [(p, 0.0, images[c]) for p, c in zip(parts, chunks, strict=True)], 2
            )
            self.render_seconds += rendered
            return vision_scores(batch)

        return scores
