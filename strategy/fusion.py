"""Fusion of the models' calibrated P(up) into one probability, with its uncertainty and monitoring.

Methods (FusionConfig.method):
- weighted: fixed weights, e.g. 70% CLIP, 30% XGBoost (renormalised over the models present);
- confidence_weighted: each weight times the model's own confidence |2p - 1|;
- stacking: a logistic meta-model on the models' logits, fitted on out-of-fold predictions only
  (fit_stacking); temporal smoothing (smoothing_bars > 1) applies an EMA per symbol on top of any.
Every fused value carries disagreement (max - min of the models' p) and the fused p's binary
entropy (bits); confidence = |2p - 1| * (1 - disagreement_penalty * disagreement), so the risk
engine's min_confidence rule sees uncertain and contested signals as weak.

OutcomeMonitor scores each model and the fusion as outcomes arrive (rolling Brier and hit rate),
and with adaptation enabled moves the weights toward the better-calibrated model within bounds.
Drift of the inputs (DriftMonitor, PSI) lives in strategy/drift.py. Nothing here retrains or trades.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from strategy.drift import DriftConfig
from vlm_engine.metrics import (
    brier,
    fit_logistic,
    hit_rate,
    logit,
    logit_scalar,
    sigmoid,
    sigmoid_scalar,
)

FloatArray = npt.NDArray[np.float64]
Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
FusionMethod = Literal["weighted", "confidence_weighted", "stacking"]
FUSED = "fused"


class StackingParams(msgspec.Struct, frozen=True, kw_only=True):
    """p = sigmoid(intercept + sum(coef[i] * logit(p[models[i]])))."""

    models: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float = 0.0


class Recalibration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """p' = sigmoid(a * logit(p) + b): a model's probability mapped onto the rows the daemon scores."""

    a: float = 1.0
    b: float = 0.0

    def apply_array(self, p: npt.ArrayLike) -> FloatArray:
        """apply() over an array (offline fitting and evaluation)."""
        return sigmoid(self.a * logit(p) + self.b)

    def apply(self, p: float) -> float:
        """One probability, in plain floats (the live path scores row by row); as logit() clips."""
        if not math.isfinite(p):
            return p
        return sigmoid_scalar(self.a * logit_scalar(p) + self.b)


class AdaptationConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shift weights toward the lower rolling Brier score, each weight kept in [min_weight, max_weight]."""

    enabled: bool = False
    min_weight: Unit = 0.1
    max_weight: Unit = 0.9
    rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.01
    min_outcomes: PositiveInt = 100

    def __post_init__(self) -> None:
        if self.min_weight > self.max_weight:
            msg = f"adaptation.min_weight ({self.min_weight}) must not exceed max_weight ({self.max_weight})"
            raise ValueError(msg)


class MonitorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Outcome = close horizon_bars later above the close at prediction; window = outcomes kept."""

    horizon_bars: PositiveInt = 5
    window: PositiveInt = 500


class FusionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How model probabilities become one fused Signal probability."""

    method: FusionMethod = "weighted"
    weights: dict[str, NonNegativeFloat] = msgspec.field(
        default_factory=lambda: {"clip": 0.7, "xgb": 0.3}
    )
    smoothing_bars: PositiveInt = 1
    disagreement_penalty: Unit = 1.0
    stacking: StackingParams | None = None
    # Per-model maps applied before anything else (weights, stacking, monitoring, single-model
    # modes). The bootstrap fits one for clip: CLIP's own direction calibration was fitted on its
    # pattern-rich training charts and is far too confident on the ordinary bars the daemon scores.
    recalibrate: dict[str, Recalibration] = msgspec.field(default_factory=dict)
    adaptation: AdaptationConfig = msgspec.field(default_factory=AdaptationConfig)
    monitor: MonitorConfig = msgspec.field(default_factory=MonitorConfig)
    drift: DriftConfig = msgspec.field(default_factory=DriftConfig)

    def __post_init__(self) -> None:
        if self.method == "stacking" and self.stacking is None:
            msg = "fusion.method is stacking but fusion.stacking is missing: fit it with fit_stacking on OOF predictions"
            raise ValueError(msg)
        if self.method != "stacking" and not any(w > 0 for w in self.weights.values()):
            msg = "fusion.weights must give at least one model a weight > 0"
            raise ValueError(msg)

    def describe(self, *, xgb_reads_clip: bool = True) -> str:
        """What "fused" is, in words, for model info, reports, /status and the startup log.

        xgb_reads_clip: the "xgb" model's inputs include the CLIP columns (early fusion)."""
        xgb = (
            "XGBoost on technical + CLIP columns"
            if xgb_reads_clip
            else "XGBoost on technical features"
        )
        if self.method == "stacking" and self.stacking is not None:
            coef = dict(zip(self.stacking.models, self.stacking.coef, strict=True))
            c, x = coef.get("clip", 0.0), coef.get("xgb", 0.0)
            if abs(c) < 1e-9:
                return f"fused = {xgb} (stacking); CLIP late-fusion weight 0"
            if abs(x) < 1e-9:
                return f"fused = CLIP alone (stacking); {xgb} weight 0"
            return f"fused = stacking of CLIP (coef {c:.3f}) and {xgb} (coef {x:.3f})"
        total = sum(self.weights.values()) or 1.0
        c, x = self.weights.get("clip", 0.0) / total, self.weights.get("xgb", 0.0) / total
        how = "confidence-weighted " if self.method == "confidence_weighted" else ""
        if c == 0:
            return f"fused = {xgb}; CLIP late-fusion weight 0"
        if x == 0:
            return f"fused = CLIP alone; {xgb} weight 0"
        return f"fused = {how}{c:.2f} x CLIP + {x:.2f} x {xgb}"

    def alone(self, model: str) -> FusionConfig:
        """This config passing one model's probability through (smoothing, monitoring and drift
        kept): what a single-model comparison run trades on, whatever the fitted weights say."""
        return msgspec.structs.replace(self, method="weighted", weights={model: 1.0}, stacking=None)


class Fused(msgspec.Struct, frozen=True, kw_only=True):
    """One fused probability and its uncertainty."""

    p_up: float
    confidence: float
    disagreement: float
    entropy: float


def binary_entropy(p: float) -> float:
    """Entropy of a Bernoulli(p) in bits (1 at p = 0.5, 0 at 0 or 1)."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def fit_stacking(
    oof: Mapping[str, npt.ArrayLike], y: npt.ArrayLike, *, l2: float = 1e-3
) -> StackingParams:
    """Fit the logistic meta-model on out-of-fold probabilities (rows where every model has one); coefficients >= 0."""
    models = tuple(sorted(oof))
    if not models:
        msg = "stacking needs at least one model's out-of-fold predictions"
        raise ValueError(msg)
    cols = np.column_stack([np.asarray(oof[m], dtype=np.float64) for m in models])
    ya = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(cols).all(axis=1) & np.isfinite(ya)
    if keep.sum() < 20:
        msg = f"stacking needs at least 20 out-of-fold rows with every model, got {int(keep.sum())}"
        raise ValueError(msg)
    # Non-negative coefficients: a model whose coefficient comes out negative is dropped (coef 0)
    # and the rest refitted, so the fusion never trades a model inverted.
    active = list(range(len(models)))
    coef = [0.0] * len(models)
    intercept = float(logit(np.clip(ya[keep].mean(), 1e-3, 1 - 1e-3)))
    while active:
        params = fit_logistic(logit(cols[keep][:, active]), ya[keep], l2=l2)
        if min(params.coef) >= 0:
            for i, c in zip(active, params.coef, strict=True):
                coef[i] = float(c)
            intercept = params.intercept
            break
        active.pop(int(np.argmin(params.coef)))
    return StackingParams(models=models, coef=tuple(coef), intercept=intercept)


class ModelStats(msgspec.Struct, frozen=True, kw_only=True):
    """Rolling quality of one model (or of the fusion) over its last resolved outcomes."""

    model: str
    count: int
    brier: float
    hit_rate: float


class OutcomeMonitor:
    """Resolves predictions horizon_bars later and keeps rolling Brier and hit rate per model."""

    def __init__(self, *, config: MonitorConfig) -> None:
        self.config = config
        self._pending: dict[str, deque[tuple[float, dict[str, float]]]] = {}
        self._resolved: dict[str, deque[tuple[float, float]]] = {}

    def observe(self, symbol: str, close: float, probabilities: Mapping[str, float]) -> int:
        """Record this bar's predictions; resolve the one made horizon_bars ago. Returns outcomes resolved."""
        queue = self._pending.setdefault(symbol, deque())
        queue.append((close, dict(probabilities)))
        if len(queue) <= self.config.horizon_bars:
            return 0
        then, probs = queue.popleft()
        outcome = 1.0 if close > then else 0.0
        for model, p in probs.items():
            if not math.isfinite(p):
                continue
            scores = self._resolved.get(model)
            if scores is None:
                scores = self._resolved[model] = deque(maxlen=self.config.window)
            scores.append((p, outcome))
        return 1

    def stats(self) -> dict[str, ModelStats]:
        out = {}
        for model, scores in self._resolved.items():
            if scores:
                p, y = np.asarray(scores).T
                out[model] = ModelStats(
                    model=model, count=len(scores), brier=brier(y, p), hit_rate=hit_rate(y, p)
                )
        return out


class Observation(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """A batch's rows for the outcome monitor, left by fuse_columns() for observe_columns(): each
    model's recalibrated column, then the fused p (before its own recalibration)."""

    symbols: Sequence[str]
    closes: FloatArray
    names: tuple[str, ...]
    columns: FloatArray
    fused: FloatArray


class FusionEngine:
    """Fuses per-model probabilities of one symbol at a time; keeps smoothing and monitoring state."""

    def __init__(self, *, config: FusionConfig) -> None:
        self.config = config
        self.weights: dict[str, float] = dict(config.weights)
        self.monitor = OutcomeMonitor(config=config.monitor)
        self._smoothed: dict[str, float] = {}
        self._alpha = 2.0 / (config.smoothing_bars + 1)

    def recalibrated(self, probabilities: Mapping[str, float]) -> dict[str, float]:
        """Each model's probability through its `recalibrate` map (unchanged without one)."""
        maps = self.config.recalibrate
        return {m: maps[m].apply(p) if m in maps else p for m, p in probabilities.items()}

    def combine(self, probabilities: Mapping[str, float]) -> float:
        """The fused probability before smoothing; 0.5 when no model has an opinion."""
        return self._combine(self.recalibrated(probabilities))

    def _combine(self, probabilities: Mapping[str, float]) -> float:
        cfg = self.config
        probs = {m: p for m, p in probabilities.items() if math.isfinite(p)}
        if cfg.method == "stacking" and cfg.stacking is not None:
            st = cfg.stacking
            if not all(m in probs for m in st.models):
                return 0.5
            z = st.intercept + sum(
                c * logit_scalar(probs[m]) for m, c in zip(st.models, st.coef, strict=True)
            )
            return sigmoid_scalar(z)
        total = 0.0
        acc = 0.0
        for model, p in probs.items():
            w = self.weights.get(model, 0.0)
            if cfg.method == "confidence_weighted":
                w *= abs(2 * p - 1)
            total += w
            acc += w * p
        return acc / total if total > 0 else 0.5

    def fuse(self, probabilities: Mapping[str, float], *, symbol: str = "") -> Fused:
        """Combine, smooth per symbol, and attach disagreement, entropy and confidence."""
        return self._fuse_recalibrated(self.recalibrated(probabilities), symbol)

    def _fuse_recalibrated(self, probabilities: Mapping[str, float], symbol: str) -> Fused:
        """fuse() of probabilities already through their recalibration."""
        p = self._combine(probabilities)
        if self.config.smoothing_bars > 1:
            previous = self._smoothed.get(symbol)
            p = p if previous is None else previous + self._alpha * (p - previous)
            self._smoothed[symbol] = p
        p = min(max(p, 0.0), 1.0)
        values = [v for v in probabilities.values() if math.isfinite(v)]
        disagreement = (max(values) - min(values)) if len(values) > 1 else 0.0
        confidence = abs(2 * p - 1) * max(
            0.0, 1.0 - self.config.disagreement_penalty * disagreement
        )
        return Fused(
            p_up=p, confidence=confidence, disagreement=disagreement, entropy=binary_entropy(p)
        )

    def fuse_observe(
        self,
        symbols: Sequence[str],
        closes: FloatArray,
        probabilities: Mapping[str, FloatArray],
    ) -> list[Fused]:
        """fuse() then observe() for each row in turn (row i is symbols[i], its close and each
        model's probabilities[m][i]), on whole columns. The floats are those of the row-by-row
        calls: the same operations in the same order, with exp/log kept in scalar math. With
        smoothing or adaptation (a row's result depends on the rows before it) it runs row by row."""
        out, observation = self.fuse_columns(symbols, closes, probabilities)
        if observation is not None:
            self.observe_columns(observation)
        return out

    def fuse_columns(
        self,
        symbols: Sequence[str],
        closes: FloatArray,
        probabilities: Mapping[str, FloatArray],
    ) -> tuple[list[Fused], Observation | None]:
        """fuse_observe() with the monitor's update left for observe_columns() (the live scorer
        makes it after the orders are out): the Observation to pass it, or None when the rows
        were fused and observed one by one (smoothing or adaptation: the next row's fusion
        depends on the monitor). Fusing never reads the monitor otherwise, so the fused values
        are those of fuse_observe() and, once observed, so is the monitor."""
        cfg = self.config
        if cfg.smoothing_bars > 1 or cfg.adaptation.enabled:
            out = []
            fused_map = cfg.recalibrate.get(FUSED)
            for i, (symbol, close) in enumerate(zip(symbols, closes.tolist(), strict=True)):
                # each row recalibrated once, for the fusion and the monitor alike
                row = self.recalibrated({m: float(p[i]) for m, p in probabilities.items()})
                fused = self._fuse_recalibrated(row, symbol)
                p_fused = fused.p_up if fused_map is None else fused_map.apply(fused.p_up)
                self._observe_recalibrated(symbol, close, {**row, FUSED: p_fused})
                out.append(fused)
            return out, None
        seen = {m: self._recalibrated_column(m, p) for m, p in probabilities.items()}
        p = np.minimum(np.maximum(self._combine_columns(seen, len(symbols)), 0.0), 1.0)
        columns = np.column_stack(list(seen.values())) if seen else np.zeros((len(symbols), 0))
        finite = np.isfinite(columns)
        with np.errstate(invalid="ignore"):
            spread = np.fmax.reduce(
                columns, axis=1, initial=-np.inf, where=finite
            ) - np.fmin.reduce(columns, axis=1, initial=np.inf, where=finite)
        disagreement = np.where(finite.sum(axis=1) > 1, spread, 0.0)
        confidence = np.abs(2 * p - 1) * np.maximum(
            0.0, 1.0 - cfg.disagreement_penalty * disagreement
        )
        fused_p = p.tolist()
        out = [
            Fused(p_up=v, confidence=c, disagreement=d, entropy=binary_entropy(v))
            for v, c, d in zip(fused_p, confidence.tolist(), disagreement.tolist(), strict=True)
        ]
        observation = Observation(
            symbols=symbols, closes=closes, names=(*seen, FUSED), columns=columns, fused=p
        )
        return out, observation

    def observe_columns(self, observation: Observation) -> None:
        """The outcome monitor's update that fuse_columns() left: observe() of each row in turn."""
        fused = self._recalibrated_column(FUSED, observation.fused)
        observed = np.column_stack([observation.columns, fused]).tolist()
        names, monitor = observation.names, self.monitor
        for symbol, close, values in zip(
            observation.symbols, observation.closes.tolist(), observed, strict=True
        ):
            monitor.observe(symbol, close, dict(zip(names, values, strict=True)))

    def _recalibrated_column(self, model: str, p: FloatArray) -> FloatArray:
        """recalibrated() of one model's column (Recalibration.apply per value: scalar exp/log)."""
        recal = self.config.recalibrate.get(model)
        if recal is None:
            return p
        return np.array([recal.apply(v) for v in p.tolist()], dtype=np.float64)

    def _combine_columns(self, probabilities: Mapping[str, FloatArray], n: int) -> FloatArray:
        """_combine() of n rows at once (a non-finite value is a model without an opinion)."""
        cfg = self.config
        finite = {m: np.isfinite(p) for m, p in probabilities.items()}
        if cfg.method == "stacking" and cfg.stacking is not None:
            st = cfg.stacking
            if not all(m in probabilities for m in st.models):
                return np.full(n, 0.5)
            ok = np.ones(n, dtype=np.bool_)
            z = np.zeros(n)
            for m, c in zip(st.models, st.coef, strict=True):
                ok &= finite[m]
                logits = [
                    logit_scalar(v) if math.isfinite(v) else 0.0 for v in probabilities[m].tolist()
                ]
                z = z + c * np.array(logits, dtype=np.float64)
            fused = np.array([sigmoid_scalar(v) for v in (st.intercept + z).tolist()])
            return np.where(ok, fused, 0.5)
        total = np.zeros(n)
        acc = np.zeros(n)
        for model, p in probabilities.items():
            w = np.full(n, self.weights.get(model, 0.0))
            if cfg.method == "confidence_weighted":
                w = w * np.abs(2 * p - 1)
            total = total + np.where(finite[model], w, 0.0)
            acc = acc + np.where(finite[model], w * p, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, acc / total, 0.5)

    def observe(self, symbol: str, close: float, probabilities: Mapping[str, float]) -> None:
        """Feed this bar's close and predictions (models and FUSED) to the monitor; maybe adapt.

        Models are monitored as the fusion uses them: through their recalibration."""
        self._observe_recalibrated(symbol, close, self.recalibrated(probabilities))

    def _observe_recalibrated(
        self, symbol: str, close: float, probabilities: Mapping[str, float]
    ) -> None:
        """observe() of probabilities already through their recalibration."""
        if self.monitor.observe(symbol, close, probabilities) and self.config.adaptation.enabled:
            self._adapt()

    def _adapt(self) -> None:
        cfg = self.config.adaptation
        stats = self.monitor.stats()
        models = [m for m in self.weights if m in stats and stats[m].count >= cfg.min_outcomes]
        if len(models) < 2 or len(models) != len(self.weights):
            return
        inverse = {m: 1.0 / max(stats[m].brier, 1e-6) for m in models}
        total = sum(inverse.values())
        weights = {}
        for m in models:
            target = inverse[m] / total
            w = self.weights[m] + cfg.rate * (target - self.weights[m])
            weights[m] = min(max(w, cfg.min_weight), cfg.max_weight)
        norm = sum(weights.values())
        self.weights = {m: w / norm for m, w in weights.items()}

    def stats(self) -> dict[str, ModelStats]:
        return self.monitor.stats()
