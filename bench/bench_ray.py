"""Research on Ray, on this machine: rows/s for chart render + CLIP score and for `evaluate`, in one
process versus on a local Ray with 1 and 2 workers, and the per-shard overhead; with load average.

Each configuration runs in its own process (`--child local|ray1|ray2`): a Ray session per process,
started with `ray.init(num_cpus=N)` (N workers of one CPU each), so the figures compare like with
like in one run. render+score is daemon/cluster/clip_scores.py (Ray Data, one warm engine per
actor) against ClipVision over the same windows in this process; evaluate is the CLI end to end
(`--ray` reuses the session). The per-shard overhead is the 1-worker render+score time with
shards of --small-shard bars minus the time with one shard per symbol, over the extra shards; the
fixed cost of a Ray run (actor pool start) is a run of one small shard, and the steady rate is
the windows over the per-symbol run's time less that fixed cost.
Skipped (exit 0, with the reason) when ray is not installed.

    .venv/bin/python bench/bench_ray.py [--symbols 4] [--bars 600] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from math import nan
from pathlib import Path
from typing import Any

from harness import Session, load_line

CHILDREN = ("local", "ray1", "ray2")


def _inputs(work: Path, symbols: int, bars: int, bundle: Path | None) -> tuple[Path, Path]:
    from daemon.cli import main as cli
    from strategy.market_sim import SimMarketConfig, simulate_frame

    if bundle is None:
        bundle = work / "bundle"
        cli(["model", "bootstrap", "--quick", "--out", str(bundle)])
    market = SimMarketConfig(
        symbols=tuple(f"S{i}" for i in range(symbols)), bar_seconds=60, seed=11
    )
    frame = simulate_frame(market, datetime(2024, 3, 4, tzinfo=UTC), bars)
    path = work / "bars.parquet"
    frame[["symbol", "ts", "open", "high", "low", "close", "volume"]].to_parquet(path)
    return path, bundle


def child(kind: str, bars: Path, bundle: Path, small_shard: int) -> dict[str, float]:
    """One configuration's figures (runs in its own process)."""
    import contextlib
    import io

    from daemon.cli import main as cli
    from daemon.model.loader import load_engine
    from daemon.model.vision import ClipVision
    from strategy.backtest.data import frame_batches, iter_windows
    from strategy.bars import BarStoreConfig
    from vlm_engine.dataset.bars import load_bars
    from vlm_engine.infer import InferenceConfig

    frame = load_bars(bars)
    store = BarStoreConfig(bar_seconds=60)
    windows = [w for chunk in iter_windows(frame_batches(frame), store) for w in chunk]
    figures: dict[str, float] = {"windows": float(len(windows))}
    if kind == "local":
        vision = ClipVision(engine=load_engine(bundle, spec_hash=None, inference=InferenceConfig()))
        t0 = time.perf_counter()
        vision.score_windows(windows)
        figures["render_score_rows_per_s"] = len(windows) / (time.perf_counter() - t0)
    else:
        import ray

        from daemon.cluster.clip_scores import cluster_clip_scores
        from daemon.cluster.config import RayConfig

        workers = int(kind.removeprefix("ray"))
        ray.init(
            num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False
        )
        per_symbol = RayConfig(shard_bars=10**9)  # one shard per symbol

        def score(cfg: RayConfig, part: Any = None) -> float:
            t0 = time.perf_counter()
            cluster_clip_scores(ray, bundle=bundle, bars=bars, store=store, cfg=cfg,
                                frame=frame if part is None else part, progress=False)  # fmt: skip
            return time.perf_counter() - t0

        score(per_symbol)  # warm: worker processes, imports
        seconds = score(per_symbol)
        figures["render_score_rows_per_s"] = len(windows) / seconds
        # the fixed cost of a run (actor pool start: imports, bundle load) from a one-shard run,
        # and the steady rate of the actors once started
        first = frame[frame["symbol"] == frame["symbol"].iloc[0]].head(store.window + small_shard)
        tiny = score(per_symbol, first)
        figures["fixed_seconds"] = tiny
        # nan when the fixed cost's noise swallows the work (a run too small for this machine's load)
        steady = seconds - tiny
        figures["steady_render_score_rows_per_s"] = len(windows) / steady if steady > 0 else nan
        if workers == 1:
            small = RayConfig(shard_bars=small_shard)
            symbols = frame["symbol"].nunique()
            extra = sum(-(-n // small_shard) for n in frame.groupby("symbol").size()) - symbols
            figures["per_shard_overhead_ms"] = 1000 * (score(small) - seconds) / max(extra, 1)
            figures["shards_small"] = float(extra + symbols)
    report = bars.parent / f"report-{kind}"
    argv = ["evaluate", "--bars", str(bars), "--bundle", str(bundle), "--report", str(report),
            "--no-progress", *(["--ray"] if kind != "local" else [])]  # fmt: skip
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(argv)
    if code != 0:
        raise SystemExit(f"evaluate ({kind}) failed with exit {code}")
    figures["evaluate_rows_per_s"] = len(windows) / (time.perf_counter() - t0)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--bars", type=int, default=600, help="1-minute bars per symbol")
    parser.add_argument("--small-shard", type=int, default=50)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--bars-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.child:
        figures = child(args.child, args.bars_file, args.bundle, args.small_shard)
        print("FIGURES " + json.dumps(figures))
        return
    if importlib.util.find_spec("ray") is None:
        print("skipped: ray is not installed (pip install '.[ray]' or make test installs it)")
        return
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    bars, bundle = _inputs(work, args.symbols, args.bars, args.bundle)
    with Session("ray", max_runs=2) as bench:
        figures: dict[str, float] = {}
        for kind in CHILDREN:
            print(f"# {kind}: {load_line()}", flush=True)
            done = subprocess.run(
                [sys.executable, __file__, "--child", kind, "--bars-file", str(bars),
                 "--bundle", str(bundle), "--small-shard", str(args.small_shard)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            line = next((x for x in done.stdout.splitlines() if x.startswith("FIGURES ")), None)
            if line is None:
                raise SystemExit(f"{kind} failed: {done.stderr[-2000:]}")
            for name, value in json.loads(line.removeprefix("FIGURES ")).items():
                figures[f"{kind}_{name}"] = round(value, 3)
        for kind in ("ray1", "ray2"):
            for what in ("render_score", "evaluate"):
                key = f"{what}_rows_per_s"
                figures[f"{kind}_{what}_vs_local"] = round(
                    figures[f"{kind}_{key}"] / figures[f"local_{key}"], 3
                )
        for name, value in figures.items():
            print(f"{name:40s} {value:12.3f}")
        bench.measured_once(
            figures, why="each configuration is a minute or more; one run per configuration"
        )


if __name__ == "__main__":
    main()
