"""NumpyRenderer: a vectorised rasterizer of a ChartSpec (bodies, wicks, volume, lines); deterministic.

Everything is drawn as vertical pixel spans into a 2-d palette-index canvas (later spans
overwrite earlier ones), which is turned into RGB with one `take` at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vlm_engine.render.gasf import gasf_image
from vlm_engine.render.indicators import ChartLines, compute_lines
from vlm_engine.render.layout import Layout, make_layout, price_range, scale_price
from vlm_engine.render.spec import ChartSpec, hex_to_rgb
from vlm_engine.render.window import ChartWindow, validate_window

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Image = npt.NDArray[np.uint8]

BG, UP, DOWN, VOL_UP, VOL_DOWN, BOLLINGER, RSI, MACD, MACD_SIGNAL, SMA0 = range(10)


class _Columns:
    """Candle-area geometry per bar slot: body column range and wick column."""

    def __init__(self, *, spec: ChartSpec, width: int) -> None:
        slot = width / spec.window
        gap = slot * (1.0 - spec.body_fraction) / 2.0
        idx = np.arange(spec.window)
        self.center: FloatArray = (idx + 0.5).astype(np.float64) * slot
        self.x0: IntArray = np.floor(idx * slot + gap).astype(np.int64)
        self.x1: IntArray = np.maximum(
            self.x0, np.ceil((idx + 1) * slot - gap).astype(np.int64) - 1
        )
        self.wick: IntArray = np.clip(np.floor(self.center).astype(np.int64), self.x0, self.x1)
        self.body_width: IntArray = self.x1 - self.x0 + 1


def _fill_spans(
    canvas: npt.NDArray[np.uint8],
    cols: IntArray,
    lo: FloatArray,
    hi: FloatArray,
    code: int | npt.NDArray[np.uint8],
) -> None:
    """Set canvas[lo[i]..hi[i], cols[i]] (inclusive, clipped) to code (scalar or per span)."""
    h = canvas.shape[0]
    lo_i = np.clip(lo, 0, h).astype(np.int64)
    hi_i = np.clip(hi, -1, h - 1).astype(np.int64)
    lengths = np.maximum(hi_i - lo_i + 1, 0)
    total = int(lengths.sum())
    if total == 0:
        return
    starts = np.repeat(lo_i - (np.cumsum(lengths) - lengths), lengths)
    rows = starts + np.arange(total)
    colidx = np.repeat(cols, lengths)
    if isinstance(code, np.ndarray):
        canvas[rows, colidx] = np.repeat(code, lengths)
    else:
        canvas[rows, colidx] = code


class NumpyRenderer:
    """Rasterize charts with NumPy; same bars + spec -> byte-identical pixels."""

    name = "numpy"

    def __init__(self, *, spec: ChartSpec) -> None:
        self.spec = spec
        self.layout: Layout = make_layout(spec)
        self._columns = (
            _Columns(spec=spec, width=self.layout.candle_width)
            if self.layout.candle_width
            else None
        )
        style = spec.style
        colours = [
            style.background,
            style.up,
            style.down,
            style.volume_up,
            style.volume_down,
            style.bollinger,
            style.rsi,
            style.macd,
            style.macd_signal,
            *style.sma,
        ]
        self._palette = np.array([hex_to_rgb(c) for c in colours], dtype=np.uint8)

    def render(self, window: ChartWindow) -> Image:
        """One chart as an HxWx3 uint8 array."""
        validate_window(window)
        spec = self.spec
        bars = window.tail(spec.bars_needed)
        shown = bars.tail(spec.window)
        canvas = np.zeros((spec.height, spec.width), dtype=np.uint8)
        if self._columns is not None:
            self._draw_candle_area(
                canvas[:, : self.layout.candle_width], shown, compute_lines(spec, bars)
            )
        image: Image = self._palette.take(canvas, axis=0)
        if self.layout.gasf_width:
            image[:, spec.width - self.layout.gasf_width :] = gasf_image(
                shown.close, height=spec.height, width=self.layout.gasf_width
            )
        return image

    def render_batch(self, windows: Sequence[ChartWindow]) -> npt.NDArray[np.uint8]:
        """Charts stacked as BxHxWx3."""
        out = np.empty((len(windows), self.spec.height, self.spec.width, 3), dtype=np.uint8)
        for i, window in enumerate(windows):
            out[i] = self.render(window)
        return out

    def _draw_candle_area(
        self, area: npt.NDArray[np.uint8], shown: ChartWindow, lines: ChartLines
    ) -> None:
        spec, geo = self.spec, self._columns
        assert geo is not None
        n = len(shown)
        offset = spec.window - n
        slots = np.arange(offset, spec.window)
        up = shown.close >= shown.open
        colour = np.where(up, UP, DOWN).astype(np.uint8)

        top, bottom = self.layout.rows("price")
        height = bottom - top
        lo, hi = price_range(spec, shown, lines)

        def to_rows(values: FloatArray) -> FloatArray:
            return (hi - scale_price(spec, values)) / (hi - lo) * (height - 1)

        panel = area[top:bottom]
        for arr, code in self._price_lines(lines):
            self._draw_line(panel, to_rows(arr), offset, code)
        # wicks, then bodies (each body spans body_width columns)
        _fill_spans(
            panel,
            geo.wick[slots],
            np.rint(to_rows(shown.high)),
            np.rint(to_rows(shown.low)),
            colour,
        )
        widths = geo.body_width[slots]
        body_cols = np.repeat(geo.x0[slots], widths) + _ramp(widths)
        _fill_spans(
            panel,
            body_cols,
            np.repeat(np.rint(to_rows(np.maximum(shown.open, shown.close))), widths),
            np.repeat(np.rint(to_rows(np.minimum(shown.open, shown.close))), widths),
            np.repeat(colour, widths),
        )
        if spec.volume:
            top, bottom = self.layout.rows("volume")
            vheight = bottom - top
            vmax = float(shown.volume.max())
            if vmax > 0:
                level = (vheight - 1) - np.rint(shown.volume / vmax * (vheight - 1))
                _fill_spans(
                    area[top:bottom],
                    body_cols,
                    np.repeat(level, widths),
                    np.full(body_cols.shape, vheight - 1, dtype=np.float64),
                    np.repeat(np.where(up, VOL_UP, VOL_DOWN).astype(np.uint8), widths),
                )
        if spec.rsi and lines.rsi is not None:
            top, bottom = self.layout.rows("rsi")
            self._draw_line(
                area[top:bottom], (100.0 - lines.rsi) / 100.0 * (bottom - top - 1), offset, RSI
            )
        if spec.macd:
            self._draw_macd(area, lines, offset, body_cols, widths)

    def _price_lines(self, lines: ChartLines) -> list[tuple[FloatArray, int]]:
        out: list[tuple[FloatArray, int]] = []
        if lines.bollinger_upper is not None and lines.bollinger_lower is not None:
            out += [(lines.bollinger_upper, BOLLINGER), (lines.bollinger_lower, BOLLINGER)]
        out += [(arr, SMA0 + i) for i, arr in enumerate(lines.sma)]
        return out

    def _draw_macd(
        self,
        area: npt.NDArray[np.uint8],
        lines: ChartLines,
        offset: int,
        body_cols: IntArray,
        widths: IntArray,
    ) -> None:
        if lines.macd is None or lines.macd_signal is None or lines.macd_hist is None:
            return
        top, bottom = self.layout.rows("macd")
        h = bottom - top
        stacked = np.concatenate([lines.macd, lines.macd_signal, lines.macd_hist])
        finite = stacked[np.isfinite(stacked)]
        span = float(np.abs(finite).max()) if finite.size else 0.0
        span = span if span > 0 else 1.0

        def to_rows(values: FloatArray) -> FloatArray:
            return (span - values) / (2 * span) * (h - 1)

        panel = area[top:bottom]
        hist = np.nan_to_num(lines.macd_hist, nan=0.0)
        zero = float(np.rint(to_rows(np.zeros(1)))[0])
        rows = np.rint(to_rows(hist))
        _fill_spans(
            panel,
            body_cols,
            np.repeat(np.minimum(rows, zero), widths),
            np.repeat(np.maximum(rows, zero), widths),
            np.repeat(np.where(hist >= 0, VOL_UP, VOL_DOWN).astype(np.uint8), widths),
        )
        self._draw_line(panel, to_rows(lines.macd), offset, MACD)
        self._draw_line(panel, to_rows(lines.macd_signal), offset, MACD_SIGNAL)

    def _draw_line(
        self, panel: npt.NDArray[np.uint8], row_values: FloatArray, offset: int, code: int
    ) -> None:
        """A 1-px polyline through the bar centres; NaN values (indicator warm-up) are skipped."""
        assert self._columns is not None
        valid = np.isfinite(row_values)
        if valid.sum() < 2:
            return
        # TA-Lib outputs are NaN only at the start, so the valid values are one contiguous run
        first = int(np.argmax(valid))
        xs = self._columns.center[offset + first : offset + len(row_values)]
        ys = row_values[first:]
        c0 = int(np.ceil(xs[0]))
        c1 = int(np.floor(xs[-1]))
        if c1 <= c0:
            return
        cols = np.arange(c0, c1 + 1)
        ys_c = np.interp(cols.astype(np.float64), xs, ys)
        nxt = np.append(ys_c[1:], ys_c[-1])
        _fill_spans(
            panel, cols, np.rint(np.minimum(ys_c, nxt)), np.rint(np.maximum(ys_c, nxt)), code
        )


def _ramp(widths: IntArray) -> IntArray:
    """0..w-1 for each w, concatenated."""
    total = int(widths.sum())
    return np.arange(total) - np.repeat(np.cumsum(widths) - widths, widths)
