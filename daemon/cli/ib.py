"""`vlmtrader ib history`: download IB bars to Parquet, paced and resumable (one file per symbol-day)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import msgspec

from daemon.errors import EXIT_CONFIG, EXIT_OK, ConfigError, TransientError
from daemon.ib.config import IbConfig, IbContractConfig, normalize_bar_size
from daemon.log_setup import configure_logging


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


def _history(args: argparse.Namespace) -> int:
    # ib_async, pandas and tqdm load only when a download runs (`vlmtrader --help` stays fast).
    from daemon.ib.download import download
    from daemon.ib.session import GatewayUnreachable

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
