"""Bars as a long pandas frame (symbol, ts, open, high, low, close, volume): loading, checks, windows."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from vlm_engine.dataset.errors import BarsInputError
from vlm_engine.render import ChartInputError, ChartWindow, make_window

BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
_SUFFIXES = (".csv", ".parquet", ".pq")


def bar_files(path: Path) -> list[Path]:
    """The bar files at path: the file itself, or every CSV/Parquet file in a directory (sorted)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())
        if not files:
            msg = f"{path}: no .csv or .parquet bar files in this directory"
            raise BarsInputError(msg)
        return files
    if not path.exists():
        msg = f"{path}: no such bar file"
        raise BarsInputError(msg)
    if path.suffix.lower() not in _SUFFIXES:
        msg = f"{path}: bar files must end in .csv or .parquet"
        raise BarsInputError(msg)
    return [path]


def load_bars(path: Path) -> pd.DataFrame:
    """Read and normalise the bars at path (file or directory); errors name the file.

    A directory may hold one file per symbol-day, as `vlmtrader ib history` writes
    (SYMBOL/YYYY-MM-DD.parquet): days without bars (weekends, holidays) are empty files and
    are skipped, and a bar repeated exactly in two files is kept once. Conflicting
    duplicates (same symbol and time, other values) are still an error.
    """
    files = bar_files(path)
    frames = []
    for file in files:
        try:
            raw = pd.read_csv(file) if file.suffix.lower() == ".csv" else pd.read_parquet(file)
        except (OSError, ValueError, pd.errors.ParserError) as e:
            msg = f"{file}: cannot read bars ({e})"
            raise BarsInputError(msg) from None
        if raw.empty and not [c for c in BAR_COLUMNS if c not in raw.columns]:
            continue  # a day without bars
        frames.append(normalize_bars(raw, where=str(file)))
    if not frames:
        msg = f"{path}: no bars in any of its {len(files)} file(s)"
        raise BarsInputError(msg)
    if len(frames) == 1:
        return frames[0]
    merged = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)
    return normalize_bars(merged, where=str(path))


def normalize_bars(frame: pd.DataFrame, *, where: str = "bars") -> pd.DataFrame:
    """Checked copy with UTC ts, float prices, sorted by (symbol, ts); extra columns are dropped."""
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        msg = f"{where}: missing column(s) {', '.join(missing)}"
        raise BarsInputError(msg)
    if frame.empty:
        msg = f"{where}: no bars"
        raise BarsInputError(msg)
    out = pd.DataFrame({"symbol": frame["symbol"].astype(str)})
    try:
        out["ts"] = pd.to_datetime(frame["ts"], utc=True)
    except (ValueError, TypeError) as e:
        msg = f"{where}: column ts is not a time ({e})"
        raise BarsInputError(msg) from None
    for col in BAR_COLUMNS[2:]:
        values = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            row = int(np.argmax(bad))
            msg = f"{where}: row {row}: column {col} is not a finite number ({frame[col].iloc[row]!r})"
            raise BarsInputError(msg)
        out[col] = values
    out = out.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    dup = out.duplicated(["symbol", "ts"])
    if dup.any():
        row = out[dup].iloc[0]
        msg = f"{where}: duplicate bar for {row['symbol']} at {row['ts']}"
        raise BarsInputError(msg)
    return out


def ts_seconds(frame: pd.DataFrame) -> np.ndarray:
    """The ts column as int64 epoch seconds."""
    ts = pd.DatetimeIndex(frame["ts"]).as_unit("s")
    return np.asarray(ts.asi8, dtype=np.int64)


def infer_bar_seconds(ts: np.ndarray, *, where: str = "bars") -> int:
    """The most common spacing of ts (epoch seconds)."""
    if ts.shape[0] < 2:
        msg = f"{where}: need at least 2 bars to infer the bar size"
        raise BarsInputError(msg)
    values, counts = np.unique(np.diff(ts), return_counts=True)
    return int(values[np.argmax(counts)])


def frame_bar_seconds(frame: pd.DataFrame, *, where: str = "bars") -> int:
    """The most common spacing between consecutive bars of each symbol in a normalised frame."""
    ts = ts_seconds(frame)
    symbols = frame["symbol"].to_numpy()
    steps = np.diff(ts)[symbols[1:] == symbols[:-1]]
    steps = steps[steps > 0]
    if steps.size == 0:
        msg = f"{where}: need at least 2 bars of one symbol to know the bar size"
        raise BarsInputError(msg)
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def frame_hash(frame: pd.DataFrame) -> str:
    """sha256 of a normalised bars frame's content (order-sensitive)."""
    digest = hashlib.sha256()
    digest.update("\n".join(frame["symbol"].tolist()).encode())
    digest.update(ts_seconds(frame).tobytes())
    for col in BAR_COLUMNS[2:]:
        digest.update(np.ascontiguousarray(frame[col].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def symbol_windows(frame: pd.DataFrame, *, where: str = "bars") -> dict[str, ChartWindow]:
    """One ChartWindow per symbol over all its bars (frame must be normalised)."""
    out: dict[str, ChartWindow] = {}
    for symbol, group in frame.groupby("symbol", sort=True):
        ts = ts_seconds(group)
        try:
            out[str(symbol)] = make_window(
                symbol=str(symbol),
                bar_seconds=infer_bar_seconds(ts, where=f"{where} {symbol}"),
                timestamps=ts,
                open=group["open"].to_numpy(),
                high=group["high"].to_numpy(),
                low=group["low"].to_numpy(),
                close=group["close"].to_numpy(),
                volume=group["volume"].to_numpy(),
            )
        except ChartInputError as e:
            msg = f"{where}: {e}"
            raise BarsInputError(msg) from None
    return out


def window_at(frame: pd.DataFrame, *, symbol: str, at: datetime | None, bars: int) -> ChartWindow:
    """The last `bars` bars of symbol closing at or before `at` (the latest when at is None)."""
    windows = symbol_windows(frame[frame["symbol"] == symbol])
    if symbol not in windows:
        known = ", ".join(sorted(frame["symbol"].unique())[:10])
        msg = f"no bars for symbol {symbol!r} (have: {known})"
        raise BarsInputError(msg)
    window = windows[symbol]
    if at is not None:
        cutoff = (
            int(pd.Timestamp(at).tz_convert("UTC").timestamp())
            if pd.Timestamp(at).tzinfo
            else int(pd.Timestamp(at, tz="UTC").timestamp())
        )
        stop = int(np.searchsorted(window.timestamps, cutoff, side="right"))
        if stop == 0:
            msg = f"no bars for {symbol} at or before {at}"
            raise BarsInputError(msg)
        window = window.slice(0, stop)
    return window.tail(bars)
