"""Pixel layout shared by both renderers: candle area, panel rows, price range and scaling."""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt

from vlm_engine.render.indicators import ChartLines
from vlm_engine.render.spec import ChartSpec
from vlm_engine.render.window import ChartWindow

FloatArray = npt.NDArray[np.float64]


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """Where things go: candle area width, GASF area width, and each panel's [top, bottom) rows."""

    candle_width: int
    gasf_width: int
    panels: tuple[tuple[str, int, int], ...]

    def rows(self, name: str) -> tuple[int, int]:
        for panel, top, bottom in self.panels:
            if panel == name:
                return top, bottom
        msg = f"layout has no panel {name!r}"
        raise KeyError(msg)


def make_layout(spec: ChartSpec) -> Layout:
    if spec.encoding == "candles":
        candle_width, gasf_width = spec.width, 0
    elif spec.encoding == "gasf":
        candle_width, gasf_width = 0, spec.width
    else:
        gasf_width = max(1, round(spec.width * spec.gasf_fraction))
        candle_width = spec.width - gasf_width
    weights = [spec.price_weight] + [spec.panel_weight] * (len(spec.panels) - 1)
    edges = np.cumsum([0, *weights]) * spec.height // sum(weights)
    panels = tuple((name, int(edges[i]), int(edges[i + 1])) for i, name in enumerate(spec.panels))
    return Layout(candle_width=candle_width, gasf_width=gasf_width, panels=panels)


def scale_price(spec: ChartSpec, values: FloatArray) -> FloatArray:
    """Values on the price axis as plotted: identity or natural log."""
    if spec.price_scale == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.where(values > 0, values, np.nan))
    return values


def price_range(spec: ChartSpec, window: ChartWindow, lines: ChartLines) -> tuple[float, float]:
    """Padded (low, high) of the shown bars on the scaled axis; overlays count when scale_overlays."""
    lows = [window.low]
    highs = [window.high]
    if spec.scale_overlays:
        extra = [*lines.sma, lines.bollinger_upper, lines.bollinger_lower]
        for arr in extra:
            if arr is not None and np.isfinite(arr).any():
                lows.append(arr[np.isfinite(arr)])
                highs.append(arr[np.isfinite(arr)])
    lo = float(np.nanmin(scale_price(spec, np.concatenate(lows))))
    hi = float(np.nanmax(scale_price(spec, np.concatenate(highs))))
    span = hi - lo
    if span <= 0:
        span = max(abs(hi) * 0.01, 1e-6)
        lo, hi = lo - span / 2, hi + span / 2
    return lo - spec.padding * span, hi + spec.padding * span
