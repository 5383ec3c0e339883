"""Replay of a CSV or Parquet file of bars as a feed, validated at the edge.

The file has the columns symbol, ts, open, high, low, close, volume (others are ignored). ts is
the bar's close: ISO 8601 text (naive means UTC) or epoch seconds (milli-, micro- and nanoseconds
are recognised by magnitude). Structural problems (missing column, missing or unparsable value)
are a ReplayFileError naming the file, the row (1 = first data row) and the column. Bars that
parse but are wrong (high < low, NaN, out of order) pass through: BarStore rejects them with a reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from daemon.errors import ConfigError, InputError
from daemon.feeds.replay_config import ReplayFeedConfig
from strategy.bars import EARLIEST_TS, LATEST_TS
from strategy.market_sim import BAR_COLUMNS
from strategy.types import Bar

log = structlog.get_logger("daemon.feeds.replay")

_NUMBERS = BAR_COLUMNS[2:]
_PARQUET = frozenset({".parquet", ".pq"})
_NAN_TEXT = frozenset({"nan", "+nan", "-nan"})


class ReplayFileError(InputError):
    """A bar file cannot be read as bars; the message names the file, row and column."""


# ---- reading and writing ----------------------------------------------------------------------
def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _fail(path: Path, problem: str) -> ReplayFileError:
    return ReplayFileError(f"{path}: {problem}")


def _read_raw(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix != ".csv" and suffix not in _PARQUET:
        msg = f"unsupported file type {suffix or '(none)'!r}: use .csv or .parquet"
        raise _fail(path, msg)
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
            if not isinstance(frame.index, pd.RangeIndex):  # pandas made the extra fields an index
                raise _fail(path, "row 1: more fields than the header has columns")
            return frame
        table = pq.read_table(path)
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except pd.errors.EmptyDataError:
        raise _fail(path, "file is empty") from None
    except (OSError, ValueError, pd.errors.ParserError, pa.ArrowException) as e:
        raise _fail(path, f"cannot read: {_one_line(e)}") from None
    for name in BAR_COLUMNS:
        if name in table.column_names and table.column(name).null_count:
            row = (
                int(np.flatnonzero(table.column(name).is_null().to_numpy(zero_copy_only=False))[0])
                + 1
            )
            raise _fail(path, f"row {row}, column {name!r}: missing value")
    return table.to_pandas()


def _missing(path: Path, column: str, values: pd.Series) -> None:
    empty = values.astype(str).str.strip() == ""
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0]) + 1
        raise _fail(path, f"row {row}, column {column!r}: missing value")


def _numbers(path: Path, column: str, values: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype):
        raise _fail(path, f"column {column!r}: expected numbers, found booleans")
    if pd.api.types.is_numeric_dtype(values.dtype):
        floats: np.ndarray = values.to_numpy(dtype=np.float64)
        return floats
    _missing(path, column, values)
    text = values.astype(str).str.strip()
    parsed: np.ndarray = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(parsed) & ~text.str.lower().isin(_NAN_TEXT).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise _fail(
            path, f"row {row + 1}, column {column!r}: cannot parse {text.iloc[row]!r} as a number"
        )
    return parsed


def _epoch(path: Path, seconds_or_finer: np.ndarray) -> pd.DatetimeIndex:
    finite = seconds_or_finer[np.isfinite(seconds_or_finer)]
    largest = float(np.max(np.abs(finite))) if len(finite) else 0.0
    unit = "s" if largest < 1e11 else "ms" if largest < 1e14 else "us" if largest < 1e17 else "ns"
    if len(finite) < len(seconds_or_finer) or largest >= 9.2e18:
        bad = ~np.isfinite(seconds_or_finer) | (np.abs(np.nan_to_num(seconds_or_finer)) >= 9.2e18)
        row = int(np.flatnonzero(bad)[0])
        raise _fail(path, f"row {row + 1}, column 'ts': {seconds_or_finer[row]!r} is not a time")
    return pd.DatetimeIndex(pd.to_datetime(seconds_or_finer, unit=unit, utc=True))


def _timestamps(path: Path, values: pd.Series) -> pd.DatetimeIndex:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return pd.DatetimeIndex(values).tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return pd.DatetimeIndex(values).tz_localize("UTC")
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return _epoch(path, values.to_numpy(dtype=np.float64))
    _missing(path, "ts", values)
    text = values.astype(str).str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        return _epoch(path, numeric.to_numpy(dtype=np.float64))
    if numeric.iloc[0] == numeric.iloc[0]:  # epoch numbers, then something else: name it
        row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
        problem = f"cannot parse {text.iloc[row]!r} as a time (the rows before are epoch seconds)"
        raise _fail(path, f"row {row + 1}, column 'ts': {problem}")
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        problem = f"cannot parse {text.iloc[row]!r} as a time (ISO 8601 or epoch seconds)"
        raise _fail(path, f"row {row + 1}, column 'ts': {problem}")
    return pd.DatetimeIndex(parsed)


def _plausible(path: Path, ts: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Refuse bar times outside the range any market had (epoch -1, year 9999), naming the row."""
    earliest, latest = pd.Timestamp(EARLIEST_TS), pd.Timestamp(LATEST_TS)
    bad = np.asarray(ts.isna() | (ts < earliest) | (ts >= latest))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = "an empty time" if pd.isna(ts[row]) else ts[row].isoformat()
        raise _fail(
            path,
            f"row {row + 1}, column 'ts': {shown} is outside {earliest.date()} .. {latest.date()}",
        )
    return ts


def load_bars_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet bar file into columns symbol, ts (UTC), open, high, low, close, volume."""
    p = Path(path)
    raw = _read_raw(p)
    missing = [c for c in BAR_COLUMNS if c not in raw.columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise _fail(p, f"missing column{'s' if len(missing) > 1 else ''} {names}")
    if raw.empty:
        raise _fail(p, "contains no bars")
    _missing(p, "symbol", raw["symbol"])
    frame = {
        "symbol": raw["symbol"].astype(str).str.strip().to_numpy(dtype=object),
        "ts": _plausible(p, _timestamps(p, raw["ts"])).as_unit("us"),
        **{c: _numbers(p, c, raw[c]) for c in _NUMBERS},
    }
    return pd.DataFrame(frame)


def bars_to_frame(bars: Iterable[Bar]) -> pd.DataFrame:
    """Bars as a frame with the replay columns."""
    rows = list(bars)
    return pd.DataFrame(
        {
            "symbol": [b.symbol for b in rows],
            "ts": pd.DatetimeIndex([b.ts for b in rows], tz="UTC").as_unit("us")
            if rows
            else pd.DatetimeIndex([], tz="UTC"),
            **{c: np.array([getattr(b, c) for b in rows], dtype=np.float64) for c in _NUMBERS},
        }
    )


def write_bars(path: str | Path, bars: Iterable[Bar] | pd.DataFrame) -> Path:
    """Write bars as CSV (ISO 8601 ts) or Parquet, chosen by the file's suffix."""
    p = Path(path)
    frame = bars if isinstance(bars, pd.DataFrame) else bars_to_frame(bars)
    frame = frame.loc[:, list(BAR_COLUMNS)]
    suffix = p.suffix.lower()
    if suffix == ".csv":
        text = frame.assign(ts=[t.isoformat() for t in frame["ts"]])
        text.to_csv(p, index=False)
    elif suffix in _PARQUET:
        frame.to_parquet(p, index=False)
    else:
        raise _fail(p, f"unsupported file type {suffix or '(none)'!r}: use .csv or .parquet")
    return p


# ---- the feed ---------------------------------------------------------------------------------
class ReplayFeed:
    """Async context manager replaying a bar file one timestamp at a time; reusable, not re-entrant."""

    def __init__(self, *, config: ReplayFeedConfig) -> None:
        self.config = config
        self._entered = False
        self._frame: pd.DataFrame | None = None
        self._starts: list[int] = []
        self._times: list[datetime] = []
        self._yielded = 0  # batches before this index have been yielded by closed_bars

    async def __aenter__(self) -> ReplayFeed:
        if self._entered:
            msg = "ReplayFeed is already open; it can be reused but not re-entered"
            raise RuntimeError(msg)
        try:
            frame = await asyncio.to_thread(load_bars_frame, self.config.path)
        except ReplayFileError as e:
            msg = f"feed.replay.path: {e}"
            raise ConfigError(msg) from None
        if self.config.symbols is not None:
            frame = frame[frame["symbol"].isin(self.config.symbols)].reset_index(drop=True)
            if frame.empty:
                msg = f"feed.replay.symbols: {self.config.path} has no bars for {list(self.config.symbols)}"
                raise ConfigError(msg)
        self._index(frame)
        self._entered = True
        log.info(
            "feed.loaded",
            kind="replay",
            path=self.config.path,
            rows=len(frame),
            batches=len(self._times),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False

    def _index(self, frame: pd.DataFrame) -> None:
        """Group consecutive rows with the same ts into batches, keeping the file's order."""
        ts = frame["ts"].to_numpy(dtype="datetime64[us]").astype(np.int64)
        starts = np.r_[0, np.flatnonzero(ts[1:] != ts[:-1]) + 1]
        self._frame = frame
        self._starts = [*starts.tolist(), len(frame)]
        self._times = [t.to_pydatetime() for t in frame["ts"].iloc[starts]]
        self._yielded = 0

    def _batch(self, i: int) -> list[Bar]:
        assert self._frame is not None
        lo, hi = self._starts[i], self._starts[i + 1]
        part = self._frame.iloc[lo:hi]
        ts = self._times[i]
        columns = [part[c].tolist() for c in _NUMBERS]
        return [
            Bar(symbol=s, ts=ts, open=o, high=h, low=low, close=c, volume=v)
            for s, o, h, low, c, v in zip(part["symbol"].tolist(), *columns, strict=True)
        ]

    @property
    def connected(self) -> bool:
        """A local source is always connected (the Feed protocol)."""
        return True

    def first_ts(self) -> datetime:
        """The earliest bar close in the file (after the symbol filter)."""
        if not self._times:
            msg = "open the ReplayFeed (async with) before asking for first_ts()"
            raise RuntimeError(msg)
        return min(self._times)

    async def closed_bars(self, resume_after: datetime | None = None) -> AsyncIterator[list[Bar]]:
        """Yield the file's batches closing after resume_after, paced by their ts / speed."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        started = loop.time()
        base: datetime | None = None
        count = 0
        log.info(
            "feed.started",
            kind="replay",
            path=cfg.path,
            speed=cfg.speed,
            resume_after=resume_after.isoformat() if resume_after else None,
        )
        for i, ts in enumerate(self._times):
            if cfg.max_bars is not None and count >= cfg.max_bars:
                break
            if resume_after is not None and ts <= resume_after:
                continue
            if base is None:
                base = ts
            delay = 0.0
            if cfg.speed > 0:
                delay = started + (ts - base).total_seconds() / cfg.speed - loop.time()
            await asyncio.sleep(max(delay, 0.0))
            batch = self._batch(i)
            self._yielded = i + 1
            count += 1
            yield batch
        log.info("feed.exhausted", kind="replay", batches=count)

    async def backfill(self, n: int, before: datetime | None = None) -> list[list[Bar]]:
        """The last n batches closing at or before `before` (None: up to the last batch yielded), in file order."""
        if before is None:
            chosen = list(range(self._yielded))
        else:
            chosen = [i for i, ts in enumerate(self._times) if ts <= before]
        return [self._batch(i) for i in chosen[max(len(chosen) - n, 0) :]]
