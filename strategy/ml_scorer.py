"""The ML scorer for the daemon: windows -> (chart -> CLIP) + TA-Lib features -> XGBoost -> fusion -> Signal.

The vision model is anything with `score_windows(windows) -> VisionScores` (the CLIP inference
engine renders the charts itself, so the renderer and its chart spec stay in one place); one that
can also start() a batch (StartedVision) scores it while the features are computed. XGBoost
sees the technical features plus, when its feature names ask for them, the CLIP pattern and
direction probabilities and a PCA projection of the CLIP embedding. mode picks what the Signal
carries: "fused" (both through FusionEngine), "xgb" or "clip" alone (the comparison runs).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from strategy.bars import FloatArray, Window
from strategy.drift import DriftMonitor, DriftReport
from strategy.features import FeatureEngine
from strategy.fusion import Fused, FusionEngine, Observation
from strategy.scoring import rejected_signal
from strategy.types import Signal
from vlm_engine.xgb.model import XgbModel
from vlm_engine.xgb.pca import PcaParams

ScorerMode = Literal["fused", "xgb", "clip"]


class VisionScores(msgspec.Struct, frozen=True, kw_only=True):
    """Calibrated CLIP outputs for n windows: P(up) (n,), pattern probabilities (n, k), embeddings (n, d);
    charts: the (h, w, 3) uint8 images scored, in chunks whose rows follow the windows (may be empty)."""

    p_up: FloatArray
    pattern_probs: FloatArray
    pattern_names: tuple[str, ...]
    embeddings: FloatArray
    charts: tuple[npt.NDArray[np.uint8], ...] = ()


class Evidence(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """What one score() call saw, retained by reference (no copies on the bar-to-order path) for
    the explainer that runs after the orders are out: the windows, XGBoost's input rows, each
    model's P(up), CLIP's outputs (vision row j is window vision_rows[j]), the fused values (None
    for a rejected row) and the fusion weights in force."""

    windows: Sequence[Window]
    features: FloatArray
    probabilities: dict[str, FloatArray]
    vision: VisionScores | None
    vision_rows: npt.NDArray[np.intp]
    fused: list[Fused | None]
    weights: dict[str, float]


class VisionModel(Protocol):
    """Renders and scores windows with the warm CLIP model."""

    def score_windows(self, windows: Sequence[Window]) -> VisionScores: ...


@runtime_checkable
class StartedVision(VisionModel, Protocol):
    """A VisionModel that can start a batch and hand the caller a join: the CLIP workers run
    while the caller computes the technical features (model_rows)."""

    def start(self, windows: Sequence[Window]) -> Callable[[], VisionScores]: ...


def vision_columns(
    scores: VisionScores, pca: PcaParams | None
) -> tuple[tuple[str, ...], FloatArray]:
    """XGBoost columns from CLIP outputs: clip_p_up, clip_<pattern>..., clip_pc<i>... (PCA fitted on train)."""
    names = ["clip_p_up", *(f"clip_{p}" for p in scores.pattern_names)]
    cols = [scores.p_up[:, None], scores.pattern_probs]
    if pca is not None:
        projected = pca.transform(scores.embeddings)
        names += [f"clip_pc{i}" for i in range(projected.shape[1])]
        cols.append(projected)
    return tuple(names), np.hstack(cols)


NON_FINITE_FEATURES = "non_finite_features"
# XGBoost reads float32: a larger magnitude becomes inf there, which it refuses (XGBoostError).
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def usable_values(x: FloatArray) -> npt.NDArray[np.bool_]:
    """Elementwise: a value a model can take. NaN is XGBoost's missing value and passes; an
    infinite value or one beyond float32's range does not."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(x) > _FLOAT32_MAX)


def usable_rows(x: FloatArray) -> npt.NDArray[np.bool_]:
    """Per row of a feature matrix: every value usable (see usable_values)."""
    return np.asarray(usable_values(x).all(axis=1), dtype=np.bool_)


_NO_ROWS: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)


def _spread(values: FloatArray, rows: npt.NDArray[np.intp], n: int) -> FloatArray:
    """values for `rows` of n, NaN elsewhere (the windows that reached no model)."""
    if rows.size == n:
        return values
    out = np.full((n, *values.shape[1:]), np.nan, dtype=np.float64)
    out[rows] = values
    return out


class Deferred(msgspec.Struct, frozen=True, kw_only=True):
    """What MLScorer.score_deferred() leaves for finish(): the batch's XGBoost input rows, which
    of them reached the models, each window's confidence, the batch's bar close, and the
    fusion's outcome-monitor update (None when the fusion made it on the path)."""

    x: FloatArray
    usable: npt.NDArray[np.bool_]
    confidences: FloatArray
    ts: datetime
    observation: Observation | None = None


class MLScorer:
    """Scorer protocol implementation (blocking: the daemon runs it in a thread)."""

    def __init__(
        self,
        *,
        features: FeatureEngine,
        fusion: FusionEngine,
        xgb: XgbModel | None = None,
        vision: VisionModel | None = None,
        pca: PcaParams | None = None,
        drift: DriftMonitor | None = None,
        mode: ScorerMode = "fused",
        name: str | None = None,
        explain_top: int = 3,
        exact_explanations: bool = False,
    ) -> None:
        if mode == "xgb" and xgb is None:
            msg = "ml scorer mode xgb needs an xgb model"
            raise ValueError(msg)
        if mode == "clip" and vision is None:
            msg = "ml scorer mode clip needs a vision model"
            raise ValueError(msg)
        if mode == "fused" and xgb is None and vision is None:
            msg = "ml scorer mode fused needs an xgb model or a vision model"
            raise ValueError(msg)
        self.features = features
        self.fusion = fusion
        self.xgb = xgb
        self.vision = vision
        self.pca = pca
        self.drift = drift
        self.mode = mode
        self.name = name or ("ml" if mode == "fused" else mode)
        self.blocking = True
        self.explain_top = explain_top
        # The live reasons use XGBoost's approximate contributions (5x faster than TreeSHAP at a
        # 100-row batch); XgbModel.contributions() stays exact for offline analysis.
        self.exact_explanations = exact_explanations
        self.drift_reports: list[DriftReport] = []
        self.evidence: Evidence | None = None  # the last score() call's, for the explainer
        self._seen: tuple[VisionScores | None, npt.NDArray[np.intp]] = (None, _NO_ROWS)
        self._uses_vision = xgb is not None and any(
            n.startswith("clip_") for n in xgb.feature_names
        )
        if self._uses_vision and vision is None:
            msg = "the xgb model was trained with CLIP features but no vision model was given"
            raise ValueError(msg)

    def describe(self) -> str:
        """What this scorer's P(up) is, in words (startup log, /status, reports)."""
        if self.mode == "clip":
            return "CLIP alone (its P(up) through the bundle's recalibration)"
        if self.mode == "xgb":
            inputs = "technical + CLIP columns" if self._uses_vision else "technical features"
            return f"XGBoost on {inputs} alone"
        return self.fusion.config.describe(xgb_reads_clip=self._uses_vision)

    def model_rows(self, windows: Sequence[Window]) -> tuple[FloatArray, dict[str, FloatArray]]:
        """The XGBoost input rows and each model's P(up) for a batch of windows; a window whose
        features are out of range (usable_rows) reaches no model and gets NaN probabilities.

        A vision model that can start a batch (StartedVision) starts on every window before the
        features are computed, so CLIP runs while they are; if a window then turns out unusable
        that result is dropped and the usable windows are scored alone, as they always were (a
        chart's INT8 score depends on its batch-mates)."""
        wants_vision = self.vision is not None and (self.mode != "xgb" or self._uses_vision)
        started = None
        if wants_vision and isinstance(self.vision, StartedVision):
            started = self.vision.start(windows)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            x = self.features.compute(windows)  # an overflow shows as inf and is refused below
        n = len(windows)
        ok = np.flatnonzero(usable_rows(x))
        fit = windows if ok.size == n else [windows[i] for i in ok.tolist()]
        probs: dict[str, FloatArray] = {}
        scores = None
        if started is not None and ok.size == n:
            scores = started()
        elif started is not None:  # dropped, joined all the same so no work is left running
            with contextlib.suppress(Exception):  # charts of unusable windows may not draw
                started()
        if self.vision is not None and wants_vision and ok.size:
            if scores is None:
                scores = self.vision.score_windows(fit)
            self._seen = (scores, ok)
            if self.mode != "xgb":
                probs["clip"] = _spread(np.asarray(scores.p_up, dtype=np.float64), ok, n)
        if self._uses_vision and scores is not None:
            _, cols = vision_columns(scores, self.pca)
            x = np.hstack([x, _spread(cols, ok, n)])
            ok = ok[usable_rows(x[ok])]
        if self.xgb is not None and self.mode != "clip" and ok.size:
            probs["xgb"] = _spread(self.xgb.predict(x[ok]), ok, n)
        return x, probs

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        """One Signal per window: fused probability with disagreement, entropy and top reasons; a
        window with out-of-range features gets a rejected signal naming them (the rest go on)."""
        signals, deferred = self.score_deferred(windows)
        return self.finish(signals, deferred)

    def score_deferred(self, windows: Sequence[Window]) -> tuple[list[Signal], Deferred | None]:
        """score() without the work no order waits for, left for finish(): the top reasons
        (XGBoost's pred_contribs, a second pass over the trees), the drift monitor's update and
        the fusion's outcome monitor's (FusionEngine.fuse_columns). Probabilities and
        confidences are those of score()."""
        self.evidence = None
        if not windows:
            return [], None
        self._seen = (None, _NO_ROWS)
        x, probs = self.model_rows(windows)
        usable = usable_rows(x)
        n = len(windows)
        rows = np.flatnonzero(usable)
        confidences = np.zeros(n)
        fused_rows: list[Fused | None] = [None] * n
        observation = None
        if rows.size:
            closes = np.array([w.close[-1] for w in windows], dtype=np.float64)
            fused, observation = self.fusion.fuse_columns(
                [windows[i].symbol for i in rows.tolist()],
                closes[rows],
                {m: p[rows] for m, p in probs.items()},
            )
            for i, one in zip(rows.tolist(), fused, strict=True):
                fused_rows[i] = one
                confidences[i] = one.confidence
        signals: list[Signal] = []
        vision, vision_rows = self._seen
        self.evidence = Evidence(
            windows=windows,
            features=x,
            probabilities=probs,
            vision=vision,
            vision_rows=vision_rows,
            fused=fused_rows,
            weights=self.fusion.weights,  # replaced, never mutated, when adaptation moves it
        )
        for i, (w, done) in enumerate(zip(windows, fused_rows, strict=True)):
            if done is None:
                signals.append(rejected_signal(w, self.name, self._out_of_range(x[i], w)))
                continue
            signals.append(
                Signal(
                    symbol=w.symbol,
                    ts=w.ts,
                    p_up=done.p_up,
                    confidence=done.confidence if math.isfinite(done.confidence) else 0.0,
                    scorer=self.name,
                    disagreement=done.disagreement,
                    entropy=done.entropy,
                )
            )
        return signals, Deferred(
            x=x, usable=usable, confidences=confidences, ts=windows[-1].ts, observation=observation
        )

    def finish(self, signals: list[Signal], deferred: Deferred | None) -> list[Signal]:
        """The signals of score_deferred() as score() returns them, with their top reasons; and
        the batch's rows into the fusion's outcome monitor and the drift monitor (its crossings
        into drift_reports)."""
        if deferred is None:
            return signals
        if deferred.observation is not None:
            self.fusion.observe_columns(deferred.observation)
        x, confidences = deferred.x, deferred.confidences
        if self.drift is not None and deferred.usable.any():
            self.drift.observe(np.hstack([x, confidences[:, None]])[deferred.usable])
            report = self.drift.check(deferred.ts)
            if report is not None:
                self.drift_reports.append(report)
        if self.xgb is None or self.mode == "clip" or self.explain_top <= 0:
            return signals
        rows = np.flatnonzero(confidences > 0)
        if rows.size == 0:
            return signals
        out = list(signals)
        explained = self.xgb.explain(
            x[rows], self.explain_top, approximate=not self.exact_explanations
        )
        for i, top in zip(rows.tolist(), explained, strict=True):
            reasons = tuple(f"{name}{'+' if value > 0 else '-'}" for name, value in top)
            out[i] = msgspec.structs.replace(out[i], reasons=reasons)
        return out

    def _out_of_range(self, row: FloatArray, window: Window) -> str:
        """'non_finite_features:<first names>' for one rejected row."""
        names = self.xgb.feature_names if self.xgb is not None else ()
        if len(names) != row.size:
            names = self.features.names(window.bar_seconds)
        bad = np.flatnonzero(~usable_values(row))
        listed = ",".join(names[j] if j < len(names) else f"f{j}" for j in bad[:4])
        return f"{NON_FINITE_FEATURES}:{listed}"

    def take_drift_reports(self) -> list[DriftReport]:
        """Drift crossings since the last call (the daemon logs each as model.drift_detected)."""
        reports, self.drift_reports = self.drift_reports, []
        return reports
