"""MplfinanceRenderer: the same ChartSpec drawn by mplfinance on one reused Agg figure; deterministic."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from vlm_engine.render.gasf import gasf_image
from vlm_engine.render.indicators import ChartLines, compute_lines
from vlm_engine.render.layout import Layout, make_layout, price_range
from vlm_engine.render.spec import ChartSpec
from vlm_engine.render.window import ChartWindow, validate_window

Image = npt.NDArray[np.uint8]
_DPI = 100


class MplfinanceRenderer:
    """Render with mplfinance on one reused figure; later charts move the first chart's artists.

    Not thread-safe: use one instance per thread or process (see MplfinancePool).
    """

    name = "mplfinance"
    thread_safe = False

    def __init__(self, *, spec: ChartSpec) -> None:
        import mplfinance as mpf
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self._mpf = mpf
        self.spec = spec
        self.layout: Layout = make_layout(spec)
        style = spec.style
        self._fig = Figure(figsize=(spec.width / _DPI, spec.height / _DPI), dpi=_DPI)
        self._fig.patch.set_facecolor(style.background)
        self._canvas: Any = FigureCanvasAgg(self._fig)
        self._axes: dict[str, Any] = {}
        self._artists: _Artists | None = None
        if self.layout.candle_width:
            for name, top, bottom in self.layout.panels:
                rect = (
                    0.0,
                    1.0 - bottom / spec.height,
                    self.layout.candle_width / spec.width,
                    (bottom - top) / spec.height,
                )
                self._axes[name] = self._fig.add_axes(rect)
        colours = mpf.make_marketcolors(
            up=style.up,
            down=style.down,
            edge="inherit",
            wick="inherit",
            volume={"up": style.volume_up, "down": style.volume_down},
        )
        self._style = mpf.make_mpf_style(
            marketcolors=colours,
            facecolor=style.background,
            edgecolor=style.background,
            figcolor=style.background,
            gridstyle="",
        )

    def render(self, window: ChartWindow) -> Image:
        """One chart as an HxWx3 uint8 array."""
        validate_window(window)
        spec = self.spec
        bars = window.tail(spec.bars_needed)
        shown = bars.tail(spec.window)
        if self._axes:
            lines = compute_lines(spec, bars)
            if self._artists is None or self._artists.n != len(shown):
                self._artists = self._setup(shown, lines)
            self._update(self._artists, shown, lines)
        if self._axes:
            self._canvas.draw()
            image = np.array(np.asarray(self._canvas.buffer_rgba())[:, :, :3], dtype=np.uint8)
        else:  # GASF only: nothing for matplotlib to draw
            image = np.zeros((spec.height, spec.width, 3), dtype=np.uint8)
        if self.layout.gasf_width:
            image[:, spec.width - self.layout.gasf_width :] = gasf_image(
                shown.close, height=spec.height, width=self.layout.gasf_width
            )
        return image

    def render_batch(
        self, windows: Sequence[ChartWindow], *, out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """Charts stacked as BxHxWx3 (into `out` when given), one after the other on the reused figure."""
        if out is None:
            out = np.empty((len(windows), self.spec.height, self.spec.width, 3), dtype=np.uint8)
        for i, window in enumerate(windows):
            out[i] = self.render(window)
        return out

    def _line_series(self, lines: ChartLines) -> list[tuple[str, npt.NDArray[np.float64], str]]:
        """(panel, values, colour) of every indicator line, in drawing order."""
        spec, style = self.spec, self.spec.style
        out: list[tuple[str, npt.NDArray[np.float64], str]] = []
        if lines.bollinger_upper is not None and lines.bollinger_lower is not None:
            out += [
                ("price", lines.bollinger_upper, style.bollinger),
                ("price", lines.bollinger_lower, style.bollinger),
            ]
        out += [("price", arr, colour) for arr, colour in zip(lines.sma, style.sma, strict=False)]
        if spec.rsi and lines.rsi is not None:
            out.append(("rsi", lines.rsi, style.rsi))
        if spec.macd and lines.macd is not None and lines.macd_signal is not None:
            out += [
                ("macd", lines.macd, style.macd),
                ("macd", lines.macd_signal, style.macd_signal),
            ]
        return out

    def _setup(self, shown: ChartWindow, lines: ChartLines) -> _Artists:
        """Draw one chart with mplfinance and keep its artists for reuse by later charts."""
        from matplotlib.collections import LineCollection, PolyCollection

        mpf = self._mpf
        for ax in self._axes.values():
            ax.cla()
        price_ax = self._axes["price"]
        frame = pd.DataFrame(
            {"Open": shown.open, "High": shown.high, "Low": shown.low, "Close": shown.close},
            index=pd.to_datetime(shown.timestamps, unit="s"),
        )
        series = self._line_series(lines)
        plots = [
            mpf.make_addplot(values, ax=self._axes[panel], color=colour, width=1.0)
            for panel, values, colour in series
        ]
        mpf.plot(
            frame,
            type="candle",
            ax=price_ax,
            addplot=plots,
            style=self._style,
            update_width_config={"candle_width": self.spec.body_fraction, "candle_linewidth": 1.0},
            warn_too_much_data=10**9,
        )
        wicks = next(c for c in price_ax.collections if isinstance(c, LineCollection))
        bodies = next(c for c in price_ax.collections if isinstance(c, PolyCollection))
        line_artists = []
        for panel in ("price", "rsi", "macd"):
            if panel in self._axes:
                line_artists += list(self._axes[panel].lines)
        bars_by_panel: dict[str, Any] = {}
        for panel in ("volume", "macd"):
            if panel in self._axes:
                coll = PolyCollection([], linewidths=0.0, antialiased=False)
                self._axes[panel].add_collection(coll)
                bars_by_panel[panel] = coll
        if self.spec.price_scale == "log":
            price_ax.set_yscale("log")
        for ax in self._axes.values():
            ax.set_axis_off()
        return _Artists(
            n=len(shown),
            wicks=wicks,
            bodies=bodies,
            lines=line_artists,
            volume=bars_by_panel.get("volume"),
            macd_hist=bars_by_panel.get("macd"),
        )

    def _update(self, artists: _Artists, shown: ChartWindow, lines: ChartLines) -> None:
        """Move the reused artists to this chart's data (same geometry as mplfinance's own)."""
        spec, style = self.spec, self.spec.style
        n = len(shown)
        x = np.arange(n, dtype=np.float64)
        up = shown.close >= shown.open
        top = np.maximum(shown.open, shown.close)
        bottom = np.minimum(shown.open, shown.close)
        colours = np.where(up[:, None], _rgba(style.up), _rgba(style.down))
        artists.wicks.set_segments(
            np.concatenate(
                [
                    np.stack([np.stack([x, shown.low], -1), np.stack([x, bottom], -1)], 1),
                    np.stack([np.stack([x, shown.high], -1), np.stack([x, top], -1)], 1),
                ]
            )
        )
        artists.wicks.set_color(np.concatenate([colours, colours]))
        artists.bodies.set_verts(_boxes(x, shown.open, shown.close, spec.body_fraction))
        artists.bodies.set_facecolor(colours)
        artists.bodies.set_edgecolor(colours)
        for artist, (_, values, _) in zip(artists.lines, self._line_series(lines), strict=True):
            artist.set_data(x, values)
        offset = spec.window - n
        xlim = (-0.5 - offset, n - 0.5)
        lo, hi = price_range(spec, shown, lines)
        if spec.price_scale == "log":
            lo, hi = float(np.exp(lo)), float(np.exp(hi))
        self._axes["price"].set_ylim(lo, hi)
        if artists.volume is not None:
            vmax = max(float(shown.volume.max()), 1e-12)
            artists.volume.set_verts(_boxes(x, np.zeros(n), shown.volume, spec.body_fraction))
            artists.volume.set_facecolor(
                np.where(up[:, None], _rgba(style.volume_up), _rgba(style.volume_down))
            )
            self._axes["volume"].set_ylim(0.0, vmax)
        if "rsi" in self._axes:
            self._axes["rsi"].set_ylim(0.0, 100.0)
        if artists.macd_hist is not None and lines.macd_hist is not None:
            stacked = np.concatenate(
                [v for v in (lines.macd, lines.macd_signal, lines.macd_hist) if v is not None]
            )
            finite = np.abs(stacked[np.isfinite(stacked)])
            span = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            hist = np.nan_to_num(lines.macd_hist, nan=0.0)
            artists.macd_hist.set_verts(_boxes(x, np.zeros(n), hist, spec.body_fraction))
            artists.macd_hist.set_facecolor(
                np.where((hist >= 0)[:, None], _rgba(style.volume_up), _rgba(style.volume_down))
            )
            self._axes["macd"].set_ylim(-span, span)
        for ax in self._axes.values():
            ax.set_xlim(*xlim)


class _Artists:
    """The matplotlib artists of one drawn chart, updated in place for the next chart."""

    def __init__(
        self, *, n: int, wicks: Any, bodies: Any, lines: list[Any], volume: Any, macd_hist: Any
    ) -> None:
        self.n = n
        self.wicks = wicks
        self.bodies = bodies
        self.lines = lines
        self.volume = volume
        self.macd_hist = macd_hist


def _rgba(colour: str) -> npt.NDArray[np.float64]:
    return np.array([int(colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5)] + [1.0])


def _boxes(
    x: npt.NDArray[np.float64], a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], width: float
) -> npt.NDArray[np.float64]:
    """Rectangles (n, 4, 2) centred on x, from a to b, like mplfinance's candle bodies."""
    d = width / 2.0
    return np.stack(
        [
            np.stack([x - d, a], -1),
            np.stack([x - d, b], -1),
            np.stack([x + d, b], -1),
            np.stack([x + d, a], -1),
        ],
        1,
    )


_worker: MplfinanceRenderer | None = None


def _init_worker(spec_json: bytes) -> None:
    """Pool initializer: one renderer per worker process, warmed up so its figure and artists exist."""
    import msgspec

    global _worker
    spec = msgspec.json.decode(spec_json, type=ChartSpec)
    _worker = MplfinanceRenderer(spec=spec)
    _worker.render(_warmup_window(spec))


def _render_chunk(windows: list[ChartWindow]) -> npt.NDArray[np.uint8]:
    assert _worker is not None
    return _worker.render_batch(windows)


def _warmup_window(spec: ChartSpec) -> ChartWindow:
    """A fixed synthetic window of bars_needed bars (a gentle zig-zag), only for warming up."""
    from vlm_engine.render.window import make_window

    n = spec.bars_needed
    close = 100.0 + np.sin(np.arange(n) / 3.0)
    open_ = np.r_[close[0], close[:-1]]
    return make_window(
        symbol="WARMUP",
        bar_seconds=60,
        timestamps=np.arange(n) * 60,
        open=open_,
        high=np.maximum(open_, close) + 0.1,
        low=np.minimum(open_, close) - 0.1,
        close=close,
        volume=np.full(n, 100.0),
    )


class MplfinancePool:
    """Warm mplfinance renderers in worker processes, kept across batches; use as a context manager.

    Each worker builds its renderer once (initializer) and reuses its figure; a batch is cut
    into chunks of up to chunk_size windows, spread over the workers and returned in order.
    Start-up (process start, mplfinance import, first figure) is paid once, not per batch.
    """

    def __init__(self, *, spec: ChartSpec, processes: int = 2, chunk_size: int = 4) -> None:
        import msgspec

        if processes < 1 or chunk_size < 1:
            msg = f"MplfinancePool: processes ({processes}) and chunk_size ({chunk_size}) must be >= 1"
            raise ValueError(msg)
        self.spec = spec
        self.processes = processes
        self.chunk_size = chunk_size
        self._pool = ProcessPoolExecutor(
            max_workers=processes, initializer=_init_worker, initargs=(msgspec.json.encode(spec),)
        )

    def __enter__(self) -> MplfinancePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def warm_up(self) -> None:
        """Start every worker now (each renders its warm-up chart) instead of on the first batch."""
        window = _warmup_window(self.spec)
        list(self._pool.map(_render_chunk, [[window]] * self.processes))

    def render_batch(
        self, windows: Sequence[ChartWindow], *, out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """Charts stacked as BxHxWx3 (into `out` when given), identical to MplfinanceRenderer.render_batch."""
        spec = self.spec
        if out is None:
            out = np.empty((len(windows), spec.height, spec.width, 3), dtype=np.uint8)
        if not windows:
            return out
        # small enough chunks that every worker gets several (balance), big enough to amortise IPC
        size = max(1, min(self.chunk_size, -(-len(windows) // (2 * self.processes))))
        chunks = [list(windows[i : i + size]) for i in range(0, len(windows), size)]
        start = 0
        for part in self._pool.map(_render_chunk, chunks):
            out[start : start + len(part)] = part
            start += len(part)
        return out
