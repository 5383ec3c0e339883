"""`vlmtrader dataset build|info`: build a versioned chart/text dataset from bars, or describe one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from daemon.cli.ray_flag import add_ray_argument
from daemon.errors import EXIT_CONFIG, EXIT_OK

EXIT_INPUT = 1


def register(sub: Any) -> None:
    p = sub.add_parser("dataset", help="build or describe a chart/text dataset")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    dsub.required = True
    build = dsub.add_parser(
        "build", help="build a dataset (HF DatasetDict + Parquet + manifest.json)"
    )
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--bars", type=Path, help="CSV/Parquet bar file or a directory of them")
    source.add_argument("--sim", action="store_true", help="use the built-in simulated market")
    build.add_argument(
        "--sim-bars", type=int, default=5000, help="bars per symbol from the simulator"
    )
    build.add_argument("--sim-seed", type=int, default=7)
    build.add_argument(
        "--sim-symbols", default="SIMA,SIMB,SIMC,SIMD", help="comma-separated symbols"
    )
    build.add_argument("--spec", type=Path, help="dataset config YAML, or a bare chart spec YAML")
    build.add_argument("--version", help="dataset version label (overrides the config)")
    build.add_argument("--seed", type=int, help="text generator seed (overrides the config)")
    build.add_argument("--stride", type=int, help="bars between samples (overrides the config)")
    build.add_argument("--out", required=True, type=Path, help="output directory")
    build.add_argument("--force", action="store_true", help="write into a non-empty directory")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_argument(build)  # the chart rendering as Ray tasks (texts stay here, in order)
    build.set_defaults(func=_build)
    info = dsub.add_parser("info", help="print a built dataset's manifest summary")
    info.add_argument("dir", type=Path)
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    # pandas, the renderer and the dataset builder load here, when a build runs.
    from daemon.cluster.errors import ClusterError
    from daemon.training.dataset import (
        build_chart_dataset,
        file_source,
        load_dataset_config,
        sim_source,
    )
    from daemon.training.paraphrase import make_paraphraser
    from vlm_engine.dataset.builder import DatasetConfig
    from vlm_engine.dataset.errors import DatasetError
    from vlm_engine.render import ChartInputError

    try:
        cfg = load_dataset_config(args.spec)
        overrides = {
            k: getattr(args, k)
            for k in ("version", "seed", "stride")
            if getattr(args, k) is not None
        }
        if overrides:
            cfg = msgspec.convert({**msgspec.to_builtins(cfg), **overrides}, type=DatasetConfig)
    except (ValueError, msgspec.ValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    out: Path = args.out
    paraphraser = make_paraphraser(cfg.paraphrase)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"error: {out} is not empty (use --force to write into it)", file=sys.stderr)
        return EXIT_INPUT
    if args.ray is not None and args.sim:
        print(
            "error: --ray needs --bars (a path every node sees): --sim bars exist in this process only",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.sim and args.sim_bars <= 0:
        print("error: --sim-bars must be > 0", file=sys.stderr)
        return EXIT_CONFIG
    try:
        with _render_map(args) as task_map:  # an unreachable cluster fails before any reading
            if args.sim:
                symbols = [s.strip() for s in args.sim_symbols.split(",") if s.strip()]
                frame, sources = sim_source(symbols, seed=args.sim_seed, bars=args.sim_bars)
            else:
                frame, sources = file_source(args.bars)
            manifest = build_chart_dataset(
                frame,
                sources,
                cfg,
                out=out,
                progress=not args.no_progress,
                paraphrase=paraphraser,
                task_map=task_map,
            )
    except (DatasetError, ChartInputError, ValueError, OSError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    counts = ", ".join(f"{k} {v}" for k, v in manifest.counts.items() if v or k != "holdout")
    print(f"ok: {out} (dataset {manifest.dataset_hash}, spec {manifest.spec_hash}, {counts})")
    if paraphraser is not None:
        stats = ", ".join(f"{k} {v}" for k, v in sorted(paraphraser.stats.items())) or "none"
        print(f"paraphrases: {stats}")
    return EXIT_OK


@contextmanager
def _render_map(args: argparse.Namespace) -> Iterator[Any]:
    """None (render here), or with --ray a RayTaskMap whose workers read the bars at --bars."""
    if args.ray is None:
        yield None
        return
    from daemon.cluster.bars_input import ChartWindowsAt
    from daemon.cluster.config import ray_config
    from daemon.cluster.session import ray_session
    from daemon.cluster.tasks import RayTaskMap

    cfg = ray_config(args.ray, None)
    assert cfg is not None  # --ray was given
    with ray_session(cfg) as ray:
        yield RayTaskMap(
            ray=ray,
            max_retries=cfg.max_retries,
            progress=not args.no_progress,
            from_path={"windows": ChartWindowsAt(path=str(args.bars.resolve()))},
        )


def _info(args: argparse.Namespace) -> int:
    from vlm_engine.dataset.builder import read_manifest  # pandas: only when the command runs

    try:
        manifest = read_manifest(args.dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(manifest), indent=2).decode())
        return EXIT_OK
    print(f"dataset:     {args.dir} ({manifest.format}, version {manifest.version})")
    print(f"hash:        {manifest.dataset_hash}")
    print(
        f"chart spec:  {manifest.spec_hash} ({manifest.renderer}, render version {manifest.render_version})"
    )
    print(f"labels:      version {manifest.label_version}, seed {manifest.seed}")
    print(f"bars:        {manifest.bars_hash[:16]} from {len(manifest.sources)} source(s)")
    for split, count in manifest.counts.items():
        if count == 0 and split == "holdout":
            continue
        d = manifest.directions[split]
        top = sorted(manifest.patterns[split].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        tops = ", ".join(f"{k} {v}" for k, v in top) or "-"
        print(
            f"{split:<12} {count:>7} samples  down/flat/up {d['down']}/{d['flat']}/{d['up']}  top patterns: {tops}"
        )
    print(f"embargoed:   {manifest.embargoed} samples dropped at split boundaries")
    return EXIT_OK
