"""--runtime: the one flag that says what runs a bundle's CLIP image tower (serve, backtest, evaluate, model verify)."""

from __future__ import annotations

import argparse

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def add_runtime_flag(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """--runtime, as scorer.runtime: torch, the bundle's ONNX export (onnx, onnx-int8) or auto."""
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=default,
        help="what runs CLIP's image tower: torch, the bundle's ONNX export (onnx, onnx-int8), "
        "or auto (the fastest whose parity holds, measured at load); default "
        + (default or "the config's scorer.runtime"),
    )
