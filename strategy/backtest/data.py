"""Bars frame -> timestamp batches -> windows (exactly as the live BarStore yields them) -> signals,
features and direction labels, computed in large batches ahead of the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd

from strategy.bars import BarStore, BarStoreConfig, FloatArray, Window
from strategy.features import FeatureEngine
from strategy.scoring import Scorer
from strategy.types import Bar, Signal

IntArray = npt.NDArray[np.int64]
BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")


def frame_batches(frame: pd.DataFrame) -> list[list[Bar]]:
    """Bars grouped by close time in time order (symbols in frame order within a batch)."""
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        msg = f"bars frame: missing column(s) {', '.join(missing)}"
        raise ValueError(msg)
    ts = pd.to_datetime(frame["ts"], utc=True)
    order = np.argsort(ts.to_numpy(), kind="stable")
    seconds = np.asarray(pd.DatetimeIndex(ts).as_unit("s").asi8, dtype=np.int64)[order]
    symbols = frame["symbol"].astype(str).to_numpy()[order].tolist()
    cols = [frame[c].to_numpy(dtype=np.float64)[order].tolist() for c in BAR_COLUMNS[2:]]
    batches: list[list[Bar]] = []
    current = -1
    stamp = datetime.fromtimestamp(0, tz=UTC)
    for i, (sec, symbol) in enumerate(zip(seconds.tolist(), symbols, strict=True)):
        if sec != current:
            current = sec
            stamp = datetime.fromtimestamp(sec, tz=UTC)
            batches.append([])
        batches[-1].append(
            Bar(
                symbol=symbol,
                ts=stamp,
                open=cols[0][i],
                high=cols[1][i],
                low=cols[2][i],
                close=cols[3][i],
                volume=cols[4][i],
            )
        )
    return batches


def iter_windows(
    batches: Sequence[Sequence[Bar]], config: BarStoreConfig, *, chunk: int = 2048
) -> Iterator[list[Window]]:
    """Every window the live BarStore would score, in stream order, in chunks of about `chunk`."""
    store = BarStore(config=config)
    pending: list[Window] = []
    for batch in batches:
        for part in _distinct_symbols(batch):
            # One batch call per part; its symbols are distinct, so each accepted bar's window
            # read after the part is the one read right after that bar (one ring per symbol).
            added = store.add_batch(part).accepted
            pending.extend(w for w in store.windows([b.symbol for b in added]) if w is not None)
        if len(pending) >= chunk:
            yield pending
            pending = []
    if pending:
        yield pending


def _distinct_symbols(batch: Sequence[Bar]) -> list[Sequence[Bar]]:
    """The batch in consecutive parts where no symbol appears twice (almost always one part)."""
    parts: list[Sequence[Bar]] = []
    start = 0
    seen: set[str] = set()
    for i, bar in enumerate(batch):
        if bar.symbol in seen:
            parts.append(batch[start:i])
            start, seen = i, set()
        seen.add(bar.symbol)
    parts.append(batch[start:])
    return parts


class PrecomputedScorer:
    """Signals scored ahead of the loop, looked up by (symbol, bar close); implements Scorer too."""

    def __init__(self, *, name: str, signals: dict[tuple[str, int], Signal]) -> None:
        self.name = name
        self.blocking = False
        self.signals = signals

    def lookup(self, symbol: str, ts: int) -> Signal | None:
        return self.signals.get((symbol, ts))

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        out = []
        for w in windows:
            s = self.signals.get((w.symbol, int(w.timestamps[-1])))
            out.append(
                s
                if s is not None
                else Signal(symbol=w.symbol, ts=w.ts, p_up=0.5, confidence=0.0, scorer=self.name)
            )
        return out


def precompute_signals(
    scorer: Scorer,
    batches: Sequence[Sequence[Bar]],
    config: BarStoreConfig,
    *,
    chunk: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> PrecomputedScorer:
    """Score every window in chunks; valid because each score depends only on its own window
    (and, for stateful scorers such as temporal fusion, on earlier windows, which come first)."""
    signals: dict[tuple[str, int], Signal] = {}
    for windows in iter_windows(batches, config, chunk=chunk):
        for w, s in zip(windows, scorer.score(windows), strict=True):
            signals[(w.symbol, int(w.timestamps[-1]))] = s
        if progress is not None:
            progress(len(windows))
    return PrecomputedScorer(name=scorer.name, signals=signals)


def signals_from_probabilities(
    name: str,
    symbols: Sequence[str],
    ts: IntArray,
    p_up: FloatArray,
    *,
    disagreement: FloatArray | None = None,
    entropy: FloatArray | None = None,
) -> PrecomputedScorer:
    """A lookup scorer from per-sample probabilities (NaN = no opinion); confidence is |2p - 1|."""
    signals: dict[tuple[str, int], Signal] = {}
    for i, (symbol, t, p) in enumerate(zip(symbols, ts.tolist(), p_up.tolist(), strict=True)):
        if not np.isfinite(p):
            continue
        signals[(symbol, t)] = Signal(
            symbol=symbol,
            ts=datetime.fromtimestamp(t, tz=UTC),
            p_up=p,
            confidence=abs(2 * p - 1),
            scorer=name,
            disagreement=0.0 if disagreement is None else float(disagreement[i]),
            entropy=0.0 if entropy is None else float(entropy[i]),
        )
    return PrecomputedScorer(name=name, signals=signals)


class Dataset(msgspec.Struct, kw_only=True):
    """One row per scoreable window: features, label (1 = close rises over horizon), times."""

    x: FloatArray
    y: FloatArray
    ts: IntArray
    label_end: IntArray
    symbols: list[str]
    feature_names: tuple[str, ...]
    bar_seconds: int
    horizon_bars: int
    windows: int = 0

    def labelled(self) -> npt.NDArray[np.bool_]:
        return np.isfinite(self.y)


def forward_labels(
    batches: Sequence[Sequence[Bar]], horizon: int
) -> dict[tuple[str, int], tuple[float, int]]:
    """(symbol, ts) -> (1.0 if the close `horizon` bars later is higher else 0.0, that bar's ts)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for batch in batches:
        for bar in batch:
            times, closes = series.setdefault(bar.symbol, ([], []))
            times.append(int(bar.ts.timestamp()))
            closes.append(bar.close)
    out: dict[tuple[str, int], tuple[float, int]] = {}
    for symbol, (times, closes) in series.items():
        c = np.asarray(closes)
        for i in range(len(times) - horizon):
            out[(symbol, times[i])] = (1.0 if c[i + horizon] > c[i] else 0.0, times[i + horizon])
    return out


def build_dataset(
    batches: Sequence[Sequence[Bar]],
    store_config: BarStoreConfig,
    features: FeatureEngine,
    *,
    horizon: int,
    extra: Callable[[Sequence[Window]], tuple[tuple[str, ...], FloatArray]] | None = None,
    chunk: int = 2048,
) -> Dataset:
    """Features of every live window plus forward labels (NaN label when the horizon runs off the end).

    extra, when given, adds columns computed from the same windows (e.g. CLIP probabilities).
    """
    labels = forward_labels(batches, horizon)
    blocks: list[FloatArray] = []
    ys: list[float] = []
    ts: list[int] = []
    ends: list[int] = []
    symbols: list[str] = []
    names: tuple[str, ...] = ()
    extra_names: tuple[str, ...] = ()
    for windows in iter_windows(batches, store_config, chunk=chunk):
        block = features.compute(windows)
        if extra is not None:
            extra_names, extra_cols = extra(windows)
            block = np.hstack([block, extra_cols])
        names = features.names(windows[0].bar_seconds) + extra_names
        blocks.append(block)
        for w in windows:
            t = int(w.timestamps[-1])
            label, end = labels.get((w.symbol, t), (float("nan"), t))
            ys.append(label)
            ts.append(t)
            ends.append(end)
            symbols.append(w.symbol)
    x = np.vstack(blocks) if blocks else np.empty((0, len(names)))
    return Dataset(
        x=x,
        y=np.asarray(ys, dtype=np.float64),
        ts=np.asarray(ts, dtype=np.int64),
        label_end=np.asarray(ends, dtype=np.int64),
        symbols=symbols,
        feature_names=names,
        bar_seconds=store_config.bar_seconds,
        horizon_bars=horizon,
        windows=len(ys),
    )
