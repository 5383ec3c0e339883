"""`vlmtrader ib history` as a library: days of bars per symbol to Parquet, paced and resumable.

One file per symbol-day (OUT/SYMBOL/YYYY-MM-DD.parquet); a finished day already on disk is
skipped, so a rerun resumes where an interrupted download stopped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pandas as pd
import structlog
from tqdm import tqdm

from daemon.ib.config import IbConfig
from daemon.ib.feed import IbFeed

log = structlog.get_logger("daemon.ib.download")
DAY = 86400


def chunk_path(out: Path, symbol: str, day_end: datetime) -> Path:
    return out / symbol / f"{(day_end - timedelta(seconds=1)).date().isoformat()}.parquet"


async def download(
    cfg: IbConfig, *, days: int, out: Path, progress: bool = True, connect_attempts: int = 3
) -> dict[str, int]:
    """Fetch `days` of bars per symbol; finished days already on disk are skipped. Returns rows per symbol."""
    rows: dict[str, int] = {}
    async with IbFeed(config=cfg, connect_attempts=connect_attempts) as feed:
        now = await feed.server_time()
        today_end = datetime.fromtimestamp((int(now.timestamp()) // DAY + 1) * DAY, tz=UTC)
        ends = [today_end - timedelta(days=k) for k in range(days - 1, -1, -1)]
        symbols = [s for s in cfg.symbols() if s in feed.streams]
        for skipped, reason in feed.skipped.items():
            log.error("history.symbol_skipped", symbol=skipped, reason=reason)
        bar = tqdm(total=len(symbols) * len(ends), unit="day", disable=not progress)
        for symbol in symbols:
            rows[symbol] = 0
            for day_end in ends:
                path = chunk_path(out, symbol, day_end)
                complete = day_end <= now
                if complete and path.exists():
                    rows[symbol] += len(pd.read_parquet(path))
                    bar.update(1)
                    continue
                end = min(day_end, now)
                bars = await feed.history(
                    symbol, end=end, seconds=DAY - int((day_end - end).total_seconds())
                )
                frame = pd.DataFrame(
                    [msgspec.structs.asdict(b) for b in bars],
                    columns=["symbol", "ts", "open", "high", "low", "close", "volume"],
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".parquet.tmp")
                frame.to_parquet(tmp, index=False)
                tmp.replace(path)  # a crash never leaves a half-written day that looks finished
                rows[symbol] += len(frame)
                bar.set_postfix(symbol=symbol, day=path.stem)
                bar.update(1)
        bar.close()
    for symbol, n in rows.items():
        log.info("history.downloaded", symbol=symbol, rows=n, out=str(out / symbol))
    return rows
