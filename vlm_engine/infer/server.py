"""Serving: the live engine with atomic hot-swap, plus an optional shadow engine that is scored, measured, never traded."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import structlog

from vlm_engine.bundle import BundleError
from vlm_engine.infer.engine import ChartEngine, ClipBatch, InferenceConfig
from vlm_engine.infer.runtime_choice import load_engine
from vlm_engine.render import ChartInputError, ChartSpec, ChartWindow

log = structlog.get_logger("vlm_engine.infer")


class SwapResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of a hot-swap: ok with the new bundle id, or the reason the old bundle kept serving."""

    ok: bool
    role: str
    bundle_id: str
    previous_bundle_id: str
    error: str = ""


class ShadowStats(msgspec.Struct, frozen=True, kw_only=True):
    """Running comparison of shadow against live on the same charts."""

    charts: int = 0
    direction_agreement: float = 0.0
    pattern_agreement: float = 0.0
    mean_abs_p_up_diff: float = 0.0
    errors: int = 0


class Served(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """One batch as served: the live scores that trade, and the shadow scores that are only reported."""

    live: ClipBatch
    shadow: ClipBatch | None = None


class ModelServer:
    """Holds the live engine (and an optional shadow); swaps are loaded and warmed before the switch."""

    def __init__(
        self,
        *,
        live: ChartEngine,
        shadow: ChartEngine | None = None,
        config: InferenceConfig | None = None,
        spec_hash: str | None = None,
    ) -> None:
        self._live = live
        self._shadow = shadow
        self.config = config or live.config
        self.spec_hash = spec_hash
        self._swap_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = ShadowStats()

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        config: InferenceConfig | None = None,
        shadow: Path | None = None,
        spec_hash: str | None = None,
    ) -> ModelServer:
        """Load the live bundle (and the shadow one) and warm them; BundleError when the live one is unusable."""
        cfg = config or InferenceConfig()
        live = load_engine(path, config=cfg, spec_hash=spec_hash)
        server = cls(live=live, config=cfg, spec_hash=spec_hash)
        if shadow is not None:
            server.set_shadow(shadow)
        return server

    @property
    def live(self) -> ChartEngine:
        return self._live

    @property
    def spec(self) -> ChartSpec:
        """The chart spec of the live bundle."""
        return self._live.spec

    @property
    def shadow(self) -> ChartEngine | None:
        return self._shadow

    @property
    def shadow_stats(self) -> ShadowStats:
        return self._stats

    def score_batch(self, windows: Sequence[ChartWindow]) -> Served:
        """Score with the live engine (the reference is read once, so a swap mid-call is harmless), then the shadow."""
        live_engine, shadow_engine = self._live, self._shadow
        live = live_engine.score_batch(windows)
        if shadow_engine is None or not windows:
            return Served(live=live)
        try:
            if shadow_engine.spec == live_engine.spec:
                shadow = shadow_engine.score_images(live_engine.render(windows))
            else:
                shadow = shadow_engine.score_batch(windows)
        except (RuntimeError, ValueError, ChartInputError) as e:
            log.warning("shadow.failed", bundle_id=shadow_engine.bundle_id, error=str(e))
            with self._stats_lock:
                self._stats = msgspec.structs.replace(self._stats, errors=self._stats.errors + 1)
            return Served(live=live)
        self._record(live, shadow)
        return Served(live=live, shadow=shadow)

    def swap(self, path: Path) -> SwapResult:
        """Load and warm a bundle, then make it live; on any failure the old bundle keeps serving."""
        return self._replace(path, role="live")

    def set_shadow(self, path: Path | None) -> SwapResult:
        """Load and warm a shadow bundle (None removes it); on failure the previous shadow stays."""
        if path is None:
            previous = self._shadow.bundle_id if self._shadow else ""
            self._shadow = None
            log.info("shadow.removed", previous_bundle_id=previous)
            return SwapResult(ok=True, role="shadow", bundle_id="", previous_bundle_id=previous)
        return self._replace(path, role="shadow")

    def _replace(self, path: Path, *, role: str) -> SwapResult:
        with self._swap_lock:
            current = self._live if role == "live" else self._shadow
            previous = current.bundle_id if current is not None else ""
            try:
                engine = load_engine(path, config=self.config, spec_hash=self.spec_hash)
            except (BundleError, OSError, RuntimeError, ValueError) as e:
                log.warning(
                    "bundle.swap_failed",
                    role=role,
                    path=str(path),
                    error=str(e),
                    kept_bundle_id=previous,
                )
                return SwapResult(
                    ok=False,
                    role=role,
                    bundle_id=previous,
                    previous_bundle_id=previous,
                    error=str(e),
                )
            if role == "live":
                self._live = engine
            else:
                self._shadow = engine
                with self._stats_lock:
                    self._stats = ShadowStats()
            log.info(
                "bundle.swapped",
                role=role,
                bundle_id=engine.bundle_id,
                previous_bundle_id=previous,
                path=str(path),
            )
            return SwapResult(
                ok=True, role=role, bundle_id=engine.bundle_id, previous_bundle_id=previous
            )

    def _record(self, live: ClipBatch, shadow: ClipBatch) -> None:
        n = len(live)
        same_direction = float(np.mean((live.p_up > 0.5) == (shadow.p_up > 0.5)))
        same_pattern = (
            float(np.mean(live.pattern_probs.argmax(1) == shadow.pattern_probs.argmax(1)))
            if live.classes == shadow.classes
            else 0.0
        )
        diff = float(np.mean(np.abs(live.p_up - shadow.p_up)))
        with self._stats_lock:
            s = self._stats
            total = s.charts + n
            self._stats = ShadowStats(
                charts=total,
                direction_agreement=(s.direction_agreement * s.charts + same_direction * n) / total,
                pattern_agreement=(s.pattern_agreement * s.charts + same_pattern * n) / total,
                mean_abs_p_up_diff=(s.mean_abs_p_up_diff * s.charts + diff * n) / total,
                errors=s.errors,
            )
        log.info(
            "shadow.scored",
            live_bundle_id=live.bundle_id,
            shadow_bundle_id=shadow.bundle_id,
            charts=n,
            direction_agreement=same_direction,
            mean_abs_p_up_diff=diff,
        )
