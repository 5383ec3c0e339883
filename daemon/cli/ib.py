"""`vlmtrader ib history`: download IB bars to Parquet, paced and resumable (one file per symbol-day)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import structlog

from daemon.errors import EXIT_CONFIG, EXIT_OK, ConfigError, TransientError
from daemon.ib.config import IbConfig, IbContractConfig, normalize_bar_size

log = structlog.get_logger("daemon.cli.ib")
DAY = 86400


def register(sub: Any) -> None:
    p = sub.add_parser("ib", help="Interactive Brokers tools")
    ib_sub = p.add_subparsers(dest="ib_command", metavar="IB_COMMAND")
    ib_sub.required = True
    h = ib_sub.add_parser("history", help="download historical bars to Parquet (paced, resumable)")
    h.add_argument("--symbols", required=True, help="comma-separated symbols, e.g. AAPL,MSFT")
    h.add_argument(
        "--bar", default="1min", help="bar size: 1min, 5min, 1h, 30s, ... (default 1min)"
    )
    h.add_argument("--days", type=int, default=30, help="calendar days back from the gateway's now")
    h.add_argument("--out", required=True, type=Path, help="output directory")
    h.add_argument(
        "--config", type=Path, help="YAML config whose `ib:` section gives host, port, contracts"
    )
    h.add_argument("--host", help="override ib.host")
    h.add_argument("--port", type=int, help="override ib.port")
    h.add_argument("--client-id", type=int, help="override ib.client_id")
    h.add_argument(
        "--connect-attempts",
        type=int,
        default=3,
        help="give up after this many failed connection attempts (default 3)",
    )
    h.add_argument("--no-progress", action="store_true", help="no progress bar")
    h.set_defaults(func=_history)


def history_config(args: argparse.Namespace) -> IbConfig:
    """IbConfig from --config's `ib:` section (if any) plus command-line overrides."""
    cfg = IbConfig()
    if args.config is not None:
        try:
            raw = msgspec.yaml.decode(Path(args.config).read_bytes())
            cfg = msgspec.convert((raw or {}).get("ib", {}), type=IbConfig)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
            msg = f"{args.config}: {e}"
            raise ConfigError(msg) from None
    try:
        bar_size = normalize_bar_size(args.bar)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        msg = "--symbols is empty: give at least one symbol"
        raise ConfigError(msg)
    if args.connect_attempts <= 0:
        msg = f"--connect-attempts must be positive, not {args.connect_attempts}"
        raise ConfigError(msg)
    if args.days <= 0:
        msg = f"--days must be positive, not {args.days}"
        raise ConfigError(msg)
    known = {c.symbol: c for c in cfg.contracts}
    contracts = tuple(known.get(s, IbContractConfig(symbol=s)) for s in symbols)
    replace = msgspec.structs.replace
    cfg = replace(cfg, contracts=contracts, bar_size=bar_size)
    if args.host:
        cfg = replace(cfg, host=args.host)
    if args.port:
        cfg = replace(cfg, port=args.port)
    if args.client_id is not None:
        cfg = replace(cfg, client_id=args.client_id)
    return cfg


def chunk_path(out: Path, symbol: str, day_end: datetime) -> Path:
    return out / symbol / f"{(day_end - timedelta(seconds=1)).date().isoformat()}.parquet"


async def download(
    cfg: IbConfig, *, days: int, out: Path, progress: bool = True, connect_attempts: int = 3
) -> dict[str, int]:
    """Fetch `days` of bars per symbol; finished days already on disk are skipped. Returns rows per symbol."""
    import pandas as pd
    from tqdm import tqdm

    from daemon.ib.feed import IbFeed

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


def _history(args: argparse.Namespace) -> int:
    from daemon.ib.feed import GatewayUnreachable
    from daemon.log_setup import configure_logging

    configure_logging()
    try:
        cfg = history_config(args)
        asyncio.run(
            download(
                cfg,
                days=args.days,
                out=args.out,
                progress=not args.no_progress,
                connect_attempts=args.connect_attempts,
            )
        )
    except ConfigError as e:
        print(f"error: {e}")
        return EXIT_CONFIG
    except GatewayUnreachable as e:
        print(f"error: {e}")
        return 1
    except TransientError as e:
        print(f"error: {e}; run the same command again to resume")
        return 1
    return EXIT_OK
