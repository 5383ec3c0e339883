"""A Scorer from the warm CLIP engine: calibrated p_up from the direction prompts, pattern names as reasons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Protocol

import msgspec
import numpy as np

from strategy.bars import Window
from strategy.ml_scorer import VisionScores
from strategy.scoring import neutral_signal
from strategy.types import Signal
from vlm_engine.clip import NO_PATTERN
from vlm_engine.infer import ClipBatch, Served
from vlm_engine.render import ChartSpec, ChartWindow

Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]


class ClipScorerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the CLIP scorer; the bundle (and so the prompts) is chosen by the daemon's model config.

    confidence = |p_up - 0.5| * 2; below min_confidence the signal is neutral. A pattern is
    named in reasons when its calibrated probability is at least pattern_threshold.
    """

    min_confidence: Unit = 0.05
    pattern_threshold: Unit = 0.5
    max_edge: Annotated[float, msgspec.Meta(gt=0, le=0.5)] = 0.5


class ServesCharts(Protocol):
    """What the scorer needs from the model server (vlm_engine.infer.ModelServer)."""

    @property
    def spec(self) -> ChartSpec: ...

    def score_batch(self, windows: Sequence[ChartWindow]) -> Served: ...


class ClipScorer:
    """Scores windows with the served CLIP bundle; blocking, so the daemon runs it in a thread."""

    def __init__(
        self, *, server: ServesCharts, config: ClipScorerConfig | None = None, name: str = "clip"
    ) -> None:
        self.server = server
        self.config = config or ClipScorerConfig()
        self.name = name
        self.blocking = True
        self.last_shadow: list[Signal] = []

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        """One Signal per window; windows shorter than the chart spec needs are neutral ("short_window")."""
        if not windows:
            return []
        need = self.server.spec.bars_needed
        ready = [i for i, w in enumerate(windows) if len(w) >= need]
        signals = [neutral_signal(w, self.name, ("short_window",)) for w in windows]
        if not ready:
            return signals
        served = self.server.score_batch([windows[i].tail(need) for i in ready])
        for row, i in enumerate(ready):
            signals[i] = self._signal(windows[i], served.live, row, self.name)
        self.last_shadow = (
            [
                self._signal(windows[i], served.shadow, row, f"{self.name}_shadow")
                for row, i in enumerate(ready)
            ]
            if served.shadow is not None
            else []
        )
        return signals

    def _signal(self, window: Window, batch: ClipBatch, row: int, scorer: str) -> Signal:
        cfg = self.config
        p_up = float(batch.p_up[row])
        p_up = 0.5 + max(-cfg.max_edge, min(cfg.max_edge, p_up - 0.5))
        confidence = min(1.0, abs(p_up - 0.5) * 2.0)
        probs = batch.pattern_probs[row]
        top = int(probs.argmax())
        reasons: tuple[str, ...] = ()
        if batch.classes[top] != NO_PATTERN and float(probs[top]) >= cfg.pattern_threshold:
            reasons = (batch.classes[top],)
        if confidence < cfg.min_confidence:
            return neutral_signal(window, scorer, reasons)
        return Signal(
            symbol=window.symbol,
            ts=window.ts,
            p_up=p_up,
            confidence=confidence,
            scorer=scorer,
            reasons=reasons,
        )


class ClipVision:
    """strategy.ml_scorer.VisionModel backed by the model server: live scores as VisionScores for XGBoost/fusion."""

    def __init__(self, *, server: ServesCharts) -> None:
        self.server = server

    def score_windows(self, windows: Sequence[Window]) -> VisionScores:
        """Calibrated p_up, pattern probabilities and embeddings for each window, in order."""
        need = self.server.spec.bars_needed
        live = self.server.score_batch([w.tail(need) for w in windows]).live
        return VisionScores(
            p_up=live.p_up.astype(np.float64),
            pattern_probs=live.pattern_probs.astype(np.float64),
            pattern_names=live.classes,
            embeddings=live.embeddings.astype(np.float64),
        )
