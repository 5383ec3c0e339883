"""NumpyRenderer: a vectorised rasterizer of a ChartSpec (bodies, wicks, volume, lines); deterministic.

A batch is drawn at once: windows with the same number of bars are stacked, and each layer
(indicator lines, wicks, bodies, volume, RSI, MACD) becomes one set of vertical pixel spans
for the whole group. A layer is one scatter of 3-byte RGB pixels through flat indices into
the output, which starts as a copy of the background; later layers overwrite earlier ones
(wicks and bodies are one layer, one span per column, when no column belongs to two bars).
Layout tables (columns per bar, line interpolation segments) are computed once per spec.
Pixels are byte-identical to drawing each chart alone with np.interp lines (RENDER_VERSION 1).

Over 400 lines: one renderer; every layer draws into the same stacked group arrays (_Columns,
_Group), which mean nothing apart from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vlm_engine.render.gasf import gasf_image
from vlm_engine.render.indicators import ChartLines, compute_lines_batch
from vlm_engine.render.layout import Layout, make_layout
from vlm_engine.render.spec import ChartSpec, hex_to_rgb
from vlm_engine.render.window import ChartWindow, validate_window

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Image = npt.NDArray[np.uint8]
Codes = int | npt.NDArray[np.uint8]

BG, UP, DOWN, VOL_UP, VOL_DOWN, BOLLINGER, RSI, MACD, MACD_SIGNAL, SMA0 = range(10)
_COLUMNS = ("open", "high", "low", "close", "volume")
_CHUNK = 64
_PIXEL = np.dtype("V3")  # one RGB pixel as a single 3-byte item, so one scatter writes all channels


class _Columns:
    """Candle-area geometry per bar slot (body columns, wick column, centre) and line interpolation tables."""

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
        cols = np.arange(width, dtype=np.float64)
        # np.interp's segment per pixel column: centre[seg] <= col < centre[seg + 1]
        self.seg: IntArray = np.searchsorted(self.center, cols, side="right").astype(np.int64) - 1
        self.on_center: BoolArray = (self.seg >= 0) & (self.center[np.maximum(self.seg, 0)] == cols)
        # no column belongs to two bars' bodies: then a bar's wick and body can be one span per
        # column (see _draw_candle_area)
        self.disjoint = bool((self.x0[1:] > self.x1[:-1]).all())
        self._groups: dict[int, _Group] = {}

    def group(self, n: int, window: int) -> _Group:
        """Column tables for charts of n shown bars (right-aligned in the window), cached."""
        found = self._groups.get(n)
        if found is None:
            found = self._groups[n] = _Group(columns=self, n=n, window=window)
        return found


class _Group:
    """Per shown-bar-count tables: the bars' slots, body columns, and the line columns with their segments."""

    def __init__(self, *, columns: _Columns, n: int, window: int) -> None:
        offset = window - n
        self.offset = offset
        slots = np.arange(offset, window)
        self.wick: IntArray = columns.wick[slots]
        self.widths: IntArray = columns.body_width[slots]
        self.body_cols: IntArray = columns.x0[slots].repeat(self.widths) + _ramp(self.widths)
        # where each bar's wick column sits among body_cols (one per bar, in bar order)
        self.wick_at: IntArray = np.flatnonzero(self.body_cols == self.wick.repeat(self.widths))
        center = columns.center
        self.center: FloatArray = center[offset:]
        first = int(np.ceil(center[offset]))
        last = int(np.floor(center[window - 1]))
        self.line_cols: IntArray = np.arange(first, max(first, last + 1))
        seg = columns.seg[self.line_cols] - offset
        self.seg: IntArray = seg
        self.seg_next: IntArray = np.minimum(seg + 1, n - 1)
        self.x0: FloatArray = self.center[seg]
        self.x1: FloatArray = self.center[self.seg_next]
        self.dx_col: FloatArray = self.line_cols.astype(np.float64) - self.x0
        # the segment is empty only on the last centre, where np.interp returns the value itself
        self.dx_seg: FloatArray = np.where(self.seg_next > seg, self.x1 - self.x0, 1.0)
        self.on_center: BoolArray = columns.on_center[self.line_cols]
        self.any_on_center = bool(self.on_center.any())


class NumpyRenderer:
    """Rasterize charts with NumPy; same bars + spec -> byte-identical pixels."""

    name = "numpy"
    thread_safe = True  # its caches only ever grow into equal-valued arrays

    def __init__(self, *, spec: ChartSpec) -> None:
        self.spec = spec
        self.layout: Layout = make_layout(spec)
        self._rows = {name: (top, bottom) for name, top, bottom in self.layout.panels}
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
        self._background = np.broadcast_to(self._palette[BG], (spec.height, spec.width, 3)).copy()
        self._pixels = self._palette.view(_PIXEL).reshape(-1)
        self._steps = np.zeros(0, dtype=np.int64)

    def render(self, window: ChartWindow) -> Image:
        """One chart as an HxWx3 uint8 array."""
        image: Image = self.render_batch([window])[0]
        return image

    def render_batch(
        self, windows: Sequence[ChartWindow], *, out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """Charts stacked as BxHxWx3 (into `out` when given: a C-contiguous uint8 array of that shape)."""
        spec = self.spec
        shape = (len(windows), spec.height, spec.width, 3)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            msg = f"render_batch: out must be a C-contiguous uint8 array of shape {shape}, got {out.dtype} {out.shape}"
            raise ValueError(msg)
        if not windows:
            return out
        np.copyto(out, self._background)
        for order, bars in _validated_groups(windows, spec.bars_needed):
            for start in range(0, len(order), _CHUNK):  # chunks keep the work in cache
                part = slice(start, start + _CHUNK)
                self._render_group({k: v[part] for k, v in bars.items()}, out, order[part])
        return out

    def _render_group(self, bars: dict[str, FloatArray], out: Image, order: IntArray) -> None:
        """Draw one group of equal-length windows into out[order]."""
        spec, layout = self.spec, self.layout
        shown = {k: np.ascontiguousarray(v[:, -spec.window :]) for k, v in bars.items()}
        if self._columns is not None:
            self._draw_candle_area(out, order, shown, compute_lines_batch(spec, bars["close"]))
        if layout.gasf_width:
            for i, b in enumerate(order.tolist()):
                out[b, :, spec.width - layout.gasf_width :] = gasf_image(
                    shown["close"][i], height=spec.height, width=layout.gasf_width
                )

    def _draw_candle_area(
        self, out: Image, order: IntArray, shown: dict[str, FloatArray], lines: ChartLines
    ) -> None:
        spec, geo = self.spec, self._columns
        assert geo is not None
        n = shown["close"].shape[1]
        grp = geo.group(n, spec.window)
        cw = spec.width  # the candle area is the image's left part: rows step by the full width
        flat = out.reshape(-1, 3).view(_PIXEL).reshape(-1)
        base = (order * (spec.height * cw))[:, None]
        up = shown["close"] >= shown["open"]
        colour = np.where(up, UP, DOWN).astype(np.uint8)

        top, bottom = self._rows["price"]
        height = bottom - top
        lo, hi = _price_range(spec, shown, lines)
        hi_col, span_col = hi[:, None], (hi - lo)[:, None]
        log_scale = spec.price_scale == "log"

        def to_rows(values: FloatArray) -> FloatArray:
            scaled = _log(values) if log_scale else values
            rows: FloatArray = (hi_col - scaled) / span_col * (height - 1)
            return rows

        price_base = base + top * cw
        for arr, code in self._price_lines(lines):
            self._draw_line(flat, price_base, height, cw, grp, to_rows(arr), code)
        # wicks, then bodies (each body spans body_width columns)
        wick_top = np.rint(to_rows(shown["high"]))
        wick_bottom = np.rint(to_rows(shown["low"]))
        widths = grp.widths
        body_top = np.rint(to_rows(np.maximum(shown["open"], shown["close"]))).repeat(
            widths, axis=1
        )
        body_bottom = np.rint(to_rows(np.minimum(shown["open"], shown["close"]))).repeat(
            widths, axis=1
        )
        if geo.disjoint:
            # One span per column, in the wick column the union of the wick's and the body's: the
            # same pixels as the wick then the body over it, in the same colour, since the two
            # spans overlap (the body's rows lie within the wick's: high >= max(open, close), and
            # the row mapping and rint are monotone) and no other bar draws in that column. In
            # practice the union is the wick; min/max keep it exact if a log were not monotone
            # to the last bit. A fifth fewer pixels and one scatter instead of two.
            at = grp.wick_at
            body_top[:, at] = np.minimum(wick_top, body_top[:, at])
            body_bottom[:, at] = np.maximum(wick_bottom, body_bottom[:, at])
        else:
            self._fill(flat, price_base + grp.wick, wick_top, wick_bottom, height, cw, colour)
        self._fill(
            flat,
            price_base + grp.body_cols,
            body_top,
            body_bottom,
            height,
            cw,
            colour.repeat(widths, axis=1),
            apart=geo.disjoint,  # one span per column: no pixel drawn twice
        )
        if spec.volume:
            top, bottom = self._rows["volume"]
            vheight = bottom - top
            volume = shown["volume"]
            vmax = volume.max(axis=1, keepdims=True)
            drawn = (vmax > 0)[:, 0]
            if drawn.any():
                with np.errstate(divide="ignore", invalid="ignore"):
                    level = (vheight - 1) - np.rint(volume / vmax * (vheight - 1))
                level = np.where(drawn[:, None], level, vheight)  # an empty span when vmax == 0
                self._fill(
                    flat,
                    base + top * cw + grp.body_cols,
                    level.repeat(widths, axis=1),
                    np.full(level.shape[:1] + grp.body_cols.shape, vheight - 1, dtype=np.float64),
                    vheight,
                    cw,
                    np.where(up, VOL_UP, VOL_DOWN).astype(np.uint8).repeat(widths, axis=1),
                )
        if spec.rsi and lines.rsi is not None:
            top, bottom = self._rows["rsi"]
            self._draw_line(
                flat,
                base + top * cw,
                bottom - top,
                cw,
                grp,
                (100.0 - lines.rsi) / 100.0 * (bottom - top - 1),
                RSI,
            )
        if spec.macd:
            self._draw_macd(flat, base, cw, grp, lines)

    def _price_lines(self, lines: ChartLines) -> list[tuple[FloatArray, int]]:
        out: list[tuple[FloatArray, int]] = []
        if lines.bollinger_upper is not None and lines.bollinger_lower is not None:
            out += [(lines.bollinger_upper, BOLLINGER), (lines.bollinger_lower, BOLLINGER)]
        out += [(arr, SMA0 + i) for i, arr in enumerate(lines.sma)]
        return out

    def _draw_macd(
        self, flat: Image, base: IntArray, cw: int, grp: _Group, lines: ChartLines
    ) -> None:
        if lines.macd is None or lines.macd_signal is None or lines.macd_hist is None:
            return
        top, bottom = self._rows["macd"]
        h = bottom - top
        stacked = np.abs(np.concatenate([lines.macd, lines.macd_signal, lines.macd_hist], axis=1))
        biggest = np.where(np.isfinite(stacked), stacked, -np.inf).max(axis=1, keepdims=True)
        span = np.where(biggest > 0, biggest, 1.0)

        def to_rows(values: FloatArray) -> FloatArray:
            rows: FloatArray = (span - values) / (2 * span) * (h - 1)
            return rows

        panel_base = base + top * cw
        hist = np.nan_to_num(lines.macd_hist, nan=0.0)
        zero = np.rint(to_rows(np.zeros((1, 1))))
        rows = np.rint(to_rows(hist))
        widths = grp.widths
        self._fill(
            flat,
            panel_base + grp.body_cols,
            np.minimum(rows, zero).repeat(widths, axis=1),
            np.maximum(rows, zero).repeat(widths, axis=1),
            h,
            cw,
            np.where(hist >= 0, VOL_UP, VOL_DOWN).astype(np.uint8).repeat(widths, axis=1),
        )
        self._draw_line(flat, panel_base, h, cw, grp, to_rows(lines.macd), MACD)
        self._draw_line(flat, panel_base, h, cw, grp, to_rows(lines.macd_signal), MACD_SIGNAL)

    def _draw_line(
        self,
        flat: Image,
        panel_base: IntArray,
        h: int,
        cw: int,
        grp: _Group,
        row_values: FloatArray,
        code: int,
    ) -> None:
        """A 1-px polyline through the bar centres of each chart; NaN values (indicator warm-up) are skipped.

        Each pixel column between the first valid and the last centre takes np.interp's value
        (same segment, same arithmetic) and spans to the next column's value.
        """
        cols = grp.line_cols
        if cols.size < 2:
            return
        y0 = row_values[:, grp.seg]
        ys = (row_values[:, grp.seg_next] - y0) / grp.dx_seg * grp.dx_col + y0
        if grp.any_on_center:
            ys = np.where(grp.on_center, y0, ys)
        nxt = np.concatenate([ys[:, 1:], ys[:, -1:]], axis=1)
        lo = np.rint(np.fmin(ys, nxt))
        hi = np.rint(np.fmax(ys, nxt))
        valid = np.isfinite(row_values)
        if not valid.all():
            # TA-Lib outputs are NaN only at the start, so the valid values are one contiguous run
            first = np.argmax(valid, axis=1)
            start = np.ceil(grp.center[first])
            drawn = (valid.sum(axis=1) >= 2) & (start < cols[-1])
            keep = drawn[:, None] & (cols >= start[:, None])
            lo = np.where(keep, lo, h)
            hi = np.where(keep, hi, -1.0)
        self._fill(flat, panel_base + cols, lo, hi, h, cw, code)

    def _fill(
        self,
        flat: Image,
        starts: IntArray,
        lo: FloatArray,
        hi: FloatArray,
        h: int,
        cw: int,
        code: Codes,
        *,
        apart: bool = False,
    ) -> None:
        """Set rows lo..hi (inclusive, clipped to [0, h)) below each flat start index to code (scalar or per span).

        starts, lo and hi have one shape (charts, spans); within a chart later spans win.
        apart: no two spans share a pixel (the order of the spans does not matter).
        """
        lo_i = np.minimum(np.maximum(lo, 0.0), h).astype(np.int64)
        hi_i = np.minimum(np.maximum(hi, -1.0), h - 1).astype(np.int64)
        first = (starts + lo_i * cw).reshape(-1)
        if apart and isinstance(code, np.ndarray):
            # Spans in the order of their colours: each colour's pixels are then one run of idx,
            # written with its one pixel value, instead of a 3-byte value per pixel built first
            # (a take and a repeat of 3-byte items, as long as the put itself).
            codes = code.reshape(-1)
            order = np.argsort(codes, kind="stable")
            codes, first = codes[order], first[order]
            lo_i, hi_i = lo_i.reshape(-1)[order], hi_i.reshape(-1)[order]
        lengths = np.maximum(hi_i - lo_i + 1, 0).reshape(-1)
        ends = lengths.cumsum()
        total = int(ends[-1]) if ends.size else 0
        if total == 0:
            return
        idx = (first - (ends - lengths) * cw).repeat(lengths)
        idx += self._row_steps(total, cw)
        # np.put, not flat[idx] = ...: the same sequential writes (a repeated index keeps the
        # last value) without fancy indexing's set-up, ~30% less per 3-byte pixel
        if apart and isinstance(code, np.ndarray):
            change = np.flatnonzero(codes[1:] != codes[:-1]) + 1  # first span of each colour
            cuts = [0, *ends[change - 1].tolist(), total]
            for c, a, b in zip(codes[np.r_[0, change]].tolist(), cuts[:-1], cuts[1:], strict=True):
                np.put(flat, idx[a:b], self._pixels[c : c + 1])
        elif isinstance(code, np.ndarray):
            np.put(flat, idx, self._pixels.take(code.reshape(-1)).repeat(lengths))
        else:
            np.put(flat, idx, self._pixels[code : code + 1])

    def _row_steps(self, total: int, cw: int) -> IntArray:
        """0, cw, 2*cw, ... (total values), from a cache that grows as needed."""
        if self._steps.shape[0] < total:
            self._steps = np.arange(max(total, 2 * self._steps.shape[0]), dtype=np.int64) * cw
        return self._steps[:total]


def _price_range(
    spec: ChartSpec, shown: dict[str, FloatArray], lines: ChartLines
) -> tuple[FloatArray, FloatArray]:
    """Per chart padded (low, high) of the shown bars on the scaled axis; overlays count when scale_overlays."""
    lows, highs = shown["low"], shown["high"]
    if spec.scale_overlays:
        extra = [*lines.sma, lines.bollinger_upper, lines.bollinger_lower]
        overlays = [arr for arr in extra if arr is not None]
        if overlays:
            lows = np.concatenate([lows, *overlays], axis=1)
            highs = np.concatenate([highs, *overlays], axis=1)
    log_scale = spec.price_scale == "log"
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduce(_log(lows) if log_scale else lows, axis=1)
        hi = np.fmax.reduce(_log(highs) if log_scale else highs, axis=1)
    span = hi - lo
    flat = span <= 0
    if flat.any():
        fixed = np.maximum(np.abs(hi) * 0.01, 1e-6)
        lo = np.where(flat, lo - fixed / 2, lo)
        hi = np.where(flat, hi + fixed / 2, hi)
        span = np.where(flat, fixed, span)
    return lo - spec.padding * span, hi + spec.padding * span


def _log(values: FloatArray) -> FloatArray:
    """Natural log, NaN for non-positive values (as layout.scale_price)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.log(np.where(values > 0, values, np.nan))
    return out


def _validated_groups(
    windows: Sequence[ChartWindow], bars_needed: int
) -> list[tuple[IntArray, dict[str, FloatArray]]]:
    """Windows grouped by the length of their last bars_needed bars, stacked as (B, n) arrays per column.

    Each group is checked as one stack; when a stacked check fails, the windows are checked
    one by one with validate_window, so bad input raises the same ChartInputError (naming
    the window and bar) as rendering it alone would.
    """
    sizes = [len(w) for w in windows]  # once: ChartWindow.__len__ is a Python call
    by_length: dict[int, list[int]] = {}
    for i, size in enumerate(sizes):
        by_length.setdefault(min(size, bars_needed), []).append(i)
    checked = max(sizes) > bars_needed
    if checked:
        for w in windows:
            validate_window(w)  # the whole window, not only the bars drawn
    groups: list[tuple[IntArray, dict[str, FloatArray]]] = []
    for members in by_length.values():
        tails = [
            windows[i].tail(bars_needed) if sizes[i] > bars_needed else windows[i] for i in members
        ]
        stacked = _stack(tails, checked=checked)
        if stacked is None:
            for w in windows:
                validate_window(w)  # raises for the first bad window, in order
            checked = True
            stacked = _stack(tails, checked=True)
        assert stacked is not None
        groups.append((np.asarray(members, dtype=np.int64), stacked))
    return groups


def _stack(tails: list[ChartWindow], *, checked: bool = False) -> dict[str, FloatArray] | None:
    """The windows' columns as (B, n) float64 arrays, or None when one of validate_window's checks fails.

    checked: the windows were validated already; skip the checks.
    """
    b = len(tails)
    try:
        # one flat list of 1-D columns, column by column: one np.array call over 5B arrays
        # instead of B tuples (a third of the time), and each column comes out contiguous
        columns = [w.open for w in tails]
        columns += [w.high for w in tails]
        columns += [w.low for w in tails]
        columns += [w.close for w in tails]
        columns += [w.volume for w in tails]
        flat = np.array(columns, dtype=np.float64)
        ts = np.array([w.timestamps for w in tails], dtype=np.int64)
    except ValueError:  # ragged columns
        if checked:
            raise
        return None
    if flat.ndim != 2 or ts.shape != (b, flat.shape[1]) or ts.shape[1] == 0:
        if checked:
            msg = "stacked windows have inconsistent shapes"
            raise ValueError(msg)
        return None
    ohlcv = flat.reshape(5, b, -1)
    o, h, lo, c, v = ohlcv
    ok = checked or bool(
        np.isfinite(ohlcv).all()
        and all(w.bar_seconds > 0 for w in tails)
        and (h >= np.maximum(o, c)).all()
        and (lo <= np.minimum(o, c)).all()
        and (lo > 0).all()
        and (v >= 0).all()
        and (ts[:, 1:] > ts[:, :-1]).all()
    )
    return dict(zip(_COLUMNS, (o, h, lo, c, v), strict=True)) if ok else None


def _ramp(widths: IntArray) -> IntArray:
    """0..w-1 for each w, concatenated."""
    total = int(widths.sum())
    return np.arange(total) - (np.cumsum(widths) - widths).repeat(widths)
