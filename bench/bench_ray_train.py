"""CLIP fine-tuning samples/s: local (one process) vs Ray Train DDP with 1 and 2 workers, with load average.

The quick model (`model bootstrap --quick`'s chart spec and compact CLIP) trains on charts of
planted patterns cut from simulated bars. Local is vlm_engine.clip.train.main in this process
with one torch thread: its first run (cold, as every Ray worker's only run is) and its settled
warm runs. Ray starts a local Ray (2 CPUs) once and runs train_clip_ray with 1 and 2
workers (gloo, one torch thread each). Two figures per Ray run: the training loop's samples/s
inside rank 0 (data to weights, what main() takes locally) and the end-to-end samples/s of the
call (worker group start, object store, checkpoint hand-back included); their difference in
seconds is the fixed overhead of a Ray run.

    .venv/bin/python bench/bench_ray_train.py [--bars 6000] [--epochs 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime

from harness import Session, quick

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# no ~/.ray/auth_token left behind: a token there makes later loopback clusters demand one
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=2_000 if quick() else 6_000)
    parser.add_argument("--epochs", type=int, default=1 if quick() else 2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        print("bench_ray_train: skipped, the ray extra is not installed (pip install '.[ray]')")
        return
    import msgspec
    import structlog
    import torch

    from daemon.training import quick_config
    from daemon.training.clip_ray import train_clip_ray
    from strategy.market_sim import SimMarketConfig, simulate_frame
    from vlm_engine.clip.data import default_prompts
    from vlm_engine.clip.quickset import QuicksetConfig, class_names, samples_from_bars
    from vlm_engine.clip.train import main as train_local

    torch.set_num_threads(1)
    quick_cfg = quick_config()
    frame = simulate_frame(
        SimMarketConfig(symbols=("SIMA", "SIMB"), pattern_rate=0.08, seed=3),
        datetime(2024, 1, 1, tzinfo=UTC),
        args.bars,
    )
    splits = samples_from_bars(frame, quick_cfg.spec, QuicksetConfig(seed=1))
    prompts = default_prompts(class_names(splits))
    cfg = msgspec.structs.replace(
        quick_cfg.train,
        epochs=args.epochs,
        min_epochs=args.epochs,
        batch_size=args.batch_size,
        threads=1,
        progress=False,
    )
    train, val = splits["train"], splits["validation"]
    print(
        f"{len(train)} training charts, {len(val)} validation, batch {cfg.batch_size}, "
        f"{cfg.epochs} epochs ({len(train) // cfg.batch_size * cfg.epochs} steps)"
    )

    def local() -> dict[str, float]:
        t0 = time.perf_counter()
        result = train_local(cfg, train=train, val=val, prompts=prompts)
        seconds = time.perf_counter() - t0
        rate = result.samples_seen / seconds
        print(f"local: {result.samples_seen} samples in {seconds:.2f} s = {rate:.1f} samples/s")
        return {"local_samples_per_s": rate, "local_seconds": seconds}

    def on_ray(workers: int) -> dict[str, float]:
        with structlog.testing.capture_logs() as logs:
            t0 = time.perf_counter()
            result = train_clip_ray(
                cfg, train=train, val=val, prompts=prompts, workers=workers, device="cpu"
            )
            wall = time.perf_counter() - t0
        loop = next(e["loop_seconds"] for e in logs if e["event"] == "ray_train.finished")
        n = result.samples_seen
        print(
            f"ray {workers} worker(s): loop {n / loop:.1f} samples/s ({loop:.2f} s), end to end "
            f"{n / wall:.1f} samples/s ({wall:.1f} s), fixed overhead {wall - loop:.1f} s"
        )
        return {
            f"ray{workers}_loop_samples_per_s": n / loop,
            f"ray{workers}_wall_samples_per_s": n / wall,
            f"ray{workers}_overhead_s": wall - loop,
        }

    with Session("ray_train", max_runs=3) as bench:
        # a Ray worker trains once, in a fresh process: compare it with this process's first run too
        cold = local()
        bench.measured_once(
            {"local_first_samples_per_s": cold["local_samples_per_s"]},
            why="the first run in a process (cold kernels and caches), as in every Ray worker",
        )
        figures = bench.until_stable(local, key="local_samples_per_s")
        ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False)
        try:
            for workers in (1, 2):
                figures |= bench.until_stable(
                    lambda w=workers: on_ray(w),
                    key=f"ray{workers}_loop_samples_per_s",
                    max_runs=2,
                )
        finally:
            ray.shutdown()
        bench.add(
            ray2_over_ray1_loop=figures["ray2_loop_samples_per_s"]
            / figures["ray1_loop_samples_per_s"],
            ray1_over_local_first_loop=figures["ray1_loop_samples_per_s"]
            / cold["local_samples_per_s"],
        )
        print(
            f"ratios in this run: ray2/ray1 loop {bench.figures['ray2_over_ray1_loop']:.2f}, "
            f"ray1/local-first loop {bench.figures['ray1_over_local_first_loop']:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
