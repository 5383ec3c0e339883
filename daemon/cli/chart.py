"""`vlmtrader chart render|info`: draw one chart from a bar file to a PNG, or show a chart PNG's metadata."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from daemon.errors import EXIT_CONFIG, EXIT_OK

if TYPE_CHECKING:
    from vlm_engine.render import ChartSpec

EXIT_INPUT = 1


def register(sub: Any) -> None:
    p = sub.add_parser("chart", help="render a chart PNG or show a chart PNG's metadata")
    csub = p.add_subparsers(dest="chart_command", metavar="ACTION")
    csub.required = True
    render = csub.add_parser("render", help="render one chart from a bar file (CSV/Parquet)")
    render.add_argument("--bars", required=True, type=Path, help="bar file or directory")
    render.add_argument("--symbol", required=True)
    render.add_argument(
        "--at", help="last bar close time (ISO 8601, UTC if no zone); default latest"
    )
    render.add_argument("--out", required=True, type=Path, help="PNG file to write")
    render.add_argument(
        "--renderer", choices=["numpy", "mplfinance"], help="override the spec's renderer"
    )
    render.add_argument("--spec", type=Path, help="chart spec YAML (default: the built-in spec)")
    render.set_defaults(func=_render)
    info = csub.add_parser("info", help="print the metadata embedded in a chart PNG")
    info.add_argument("file", type=Path)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)


def load_spec(path: Path | None) -> ChartSpec:
    """The chart spec in a YAML file (a bare spec, or a dataset config with a `spec:` key)."""
    from vlm_engine.render import ChartSpec, decode_spec  # numpy and the renderers: not for --help

    if path is None:
        return ChartSpec()
    raw = path.read_bytes()
    data = msgspec.yaml.decode(raw) if raw.strip() else {}
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        raw = msgspec.yaml.encode(data["spec"])
    return decode_spec(raw, where=str(path))


def _render(args: argparse.Namespace) -> int:
    # pandas and the renderers load here, when the command runs (see daemon/cli/__init__.py).
    import pandas as pd

    from vlm_engine.dataset.bars import load_bars, window_at
    from vlm_engine.dataset.errors import BarsInputError
    from vlm_engine.render import ChartInputError, chart_meta, encode_png, make_renderer

    try:
        spec = load_spec(args.spec)
    except (OSError, ValueError, msgspec.DecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.renderer:
        spec = msgspec.structs.replace(spec, renderer=args.renderer)
    try:
        at = pd.Timestamp(args.at) if args.at else None
    except ValueError:
        print(
            f"error: --at {args.at!r} is not a time (use ISO 8601, e.g. 2024-01-02T15:30:00Z)",
            file=sys.stderr,
        )
        return EXIT_INPUT
    try:
        frame = load_bars(args.bars)
        window = window_at(
            frame,
            symbol=args.symbol,
            at=at.to_pydatetime() if at is not None else None,
            bars=spec.bars_needed,
        )
        image = make_renderer(spec).render(window)
        data = encode_png(image, chart_meta(spec, window))
    except (BarsInputError, ChartInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    meta = chart_meta(spec, window)
    print(
        f"ok: {args.out} ({args.symbol}, {meta.bars} bars to {pd.Timestamp(meta.last_ts, unit='s', tz='UTC').isoformat()}, "
        f"spec {meta.spec_hash}, {spec.renderer})"
    )
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    import pandas as pd

    from vlm_engine.render import ChartInputError, decode_png

    try:
        pixels, meta = decode_png(args.file.read_bytes(), where=str(args.file))
    except OSError as e:
        print(f"error: {args.file}: {e.strerror}", file=sys.stderr)
        return EXIT_INPUT
    except ChartInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print(
            msgspec.json.encode(
                {
                    **msgspec.structs.asdict(meta),
                    "width": pixels.shape[1],
                    "height": pixels.shape[0],
                }
            ).decode()
        )
        return EXIT_OK
    first = pd.Timestamp(meta.first_ts, unit="s", tz="UTC").isoformat()
    last = pd.Timestamp(meta.last_ts, unit="s", tz="UTC").isoformat()
    print(f"file:        {args.file}")
    print(f"symbol:      {meta.symbol}")
    print(f"bar seconds: {meta.bar_seconds}")
    print(f"bars:        {meta.bars} ({first} .. {last})")
    print(f"size:        {pixels.shape[1]}x{pixels.shape[0]}")
    print(f"spec hash:   {meta.spec_hash}")
    print(f"renderer:    {meta.renderer} (render version {meta.render_version})")
    return EXIT_OK
