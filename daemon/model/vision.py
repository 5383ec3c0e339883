"""The bundle's CLIP engine as strategy's VisionModel: windows -> calibrated p_up, pattern
probabilities and embeddings for XGBoost and fusion; and a per-window cache for the backtest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from strategy.bars import Window
from strategy.ml_scorer import VisionModel, VisionScores

if TYPE_CHECKING:  # torch loads only when a bundle does
    from vlm_engine.infer import ChartEngine, ClipBatch


class ClipVision:
    """strategy.ml_scorer.VisionModel backed by a warm CLIP engine.

    render_seconds adds up the time spent drawing charts, so the caller that times a scoring call
    can tell drawing from inference (the calls of one scorer never overlap)."""

    def __init__(self, *, engine: ChartEngine) -> None:
        self.engine = engine
        self.render_seconds = 0.0

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        """Calibrated p_up, pattern probabilities and embeddings for each window, in order."""
        return self.start(windows)()

    def start(self, windows: Sequence[Window]) -> Callable[[], VisionScores]:
        """score_windows() in two halves (strategy.ml_scorer.StartedVision): the engine's other
        workers start now, the returned join scores the rest in the calling thread."""
        need = self.engine.spec.bars_needed
        join = self.engine.start_batch([w.tail(need) for w in windows])

        def scores() -> VisionScores:
            batch = join()
            self.render_seconds += batch.render_seconds
            return vision_scores(batch)

        return scores


def vision_scores(batch: ClipBatch) -> VisionScores:
    """A CLIP batch's outputs as strategy's VisionScores (float64, the charts by reference)."""
    return VisionScores(
        p_up=batch.p_up.astype(np.float64),
        pattern_probs=batch.pattern_probs.astype(np.float64),
        pattern_names=batch.classes,
        embeddings=batch.embeddings.astype(np.float64),
        charts=batch.images,
    )


class CachedVision:
    """A VisionModel that scores each (symbol, bar close) once: the backtest's clip/xgb/fused share CLIP."""

    def __init__(self, *, inner: VisionModel) -> None:
        self.inner = inner
        self._rows: dict[tuple[str, int], int] = {}
        self._p_up: list[float] = []
        self._probs: list[np.ndarray] = []
        self._embeddings: list[np.ndarray] = []
        self._names: tuple[str, ...] = ()

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        """Cached rows for windows seen before, the inner model for the rest (in one batch)."""
        keys = [(w.symbol, int(w.timestamps[-1])) for w in windows]
        todo = [i for i, k in enumerate(keys) if k not in self._rows]
        if todo:
            fresh = self.inner.score_windows([windows[i] for i in todo])
            self._names = fresh.pattern_names
            for row, i in enumerate(todo):
                self._rows[keys[i]] = len(self._p_up)
                self._p_up.append(float(fresh.p_up[row]))
                self._probs.append(np.asarray(fresh.pattern_probs[row], dtype=np.float64))
                self._embeddings.append(np.asarray(fresh.embeddings[row], dtype=np.float64))
        index = [self._rows[k] for k in keys]
        return VisionScores(
            p_up=np.asarray([self._p_up[i] for i in index], dtype=np.float64),
            pattern_probs=np.vstack([self._probs[i] for i in index]),
            pattern_names=self._names,
            embeddings=np.vstack([self._embeddings[i] for i in index]),
        )
