"""`vlmtrader serve`: the prediction API on its own (no trading), batching requests into the warm model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from daemon.cli.runtime_flag import add_runtime_flag
from daemon.errors import EXIT_CONFIG, ConfigError
from daemon.log_setup import configure_logging

if TYPE_CHECKING:
    from daemon.serve import ServeConfig


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve /predict from a model bundle without trading",
        description="The prediction API alone: POST /predict (OHLCV JSON or a chart PNG), "
        "/healthz, /readyz, /metrics, POST /bundle/reload (bearer token from "
        "$VLMTRADER_API_TOKEN), /docs. Stops cleanly on SIGTERM.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="model bundle directory to load and serve")
    source.add_argument(
        "--rules", action="store_true", help="serve the TA-Lib rule scorer (no bundle needed)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="port to bind (default 8787, 0 = any)")
    p.add_argument("--max-batch", type=int, default=32, help="most requests per model call")
    p.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a request waits for company"
    )
    p.add_argument("--mode", choices=["fused", "xgb", "clip"], default="fused")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    add_runtime_flag(p, default="auto")
    p.add_argument(
        "--bar-seconds",
        type=int,
        help="bar spacing of windows for --rules (a bundle serves at its own bar size)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    p.set_defaults(func=_serve)


_FLAGS = {
    "$.api.port": "--port",
    "$.batch.max_items": "--max-batch",
    "$.batch.max_wait_ms": "--max-wait-ms",
    "$.bar_seconds": "--bar-seconds",
    "$.threads": "--threads",
}


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """Build and validate the ServeConfig; ConfigError names the flag that is wrong."""
    from daemon.serve import ServeConfig

    raw = {
        "api": {"enabled": True, "host": args.host, "port": args.port},
        "batch": {"max_items": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "mode": args.mode,
        "device": args.device,
        "threads": args.threads,
        "runtime": args.runtime,
    }
    if args.bar_seconds is not None:
        raw["bar_seconds"] = args.bar_seconds
    try:
        return msgspec.convert(raw, ServeConfig)
    except msgspec.ValidationError as e:
        problem, _, where = str(e).partition(" - at ")
        flag = _FLAGS.get(where.strip("`"), where)
        msg = f"{flag}: {problem}"
        raise ConfigError(msg) from None


def _check_bundle(path: Path | None) -> None:
    if path is not None and not path.is_dir():
        msg = f"{path}: no such bundle directory"
        raise ConfigError(msg)


def _serve(args: argparse.Namespace) -> int:
    from daemon.serve import run

    configure_logging(level=args.log_level, fmt=args.log_format)
    try:
        config = config_from_args(args)
        _check_bundle(args.bundle)
        return run(config, bundle=args.bundle)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
