"""The ML order path's scorer call in arms alternating in one process (issue 16, seventh round):
the CLIP batch schedule before (bench/ml_before.py: the caller drew the first chunk, handed it to
the pool, drew the rest and computed the features before it embedded its own chunk) and after
(ChartEngine.start_batch: the caller draws every chart, then embeds its own chunk while the pool
embeds the first, then computes the features), both on the engine's workers, and the after
schedule on one worker (no pool: is the second core worth its hand-offs at this load?). Every
round calls each arm once on the same windows, the order reversed every other round; wall and
process CPU time per MLScorer.score_deferred call. Ratios are against the first arm (before) with
95% intervals from 1,000 bootstrap resamples of rounds (paired: the same rounds for both arms).
The signals of all arms are checked to be identical.

    .venv/bin/python bench/bench_ml_arms.py --bundle /work/artifacts/boot96f \
        [--symbols 100,10] [--rounds 400]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_ml_pipeline import daemon_models, live_windows, load_average
from ml_before import before_scorer

from daemon.config import ScorerConfig
from daemon.model.loader import load_bundle
from strategy.ml_scorer import MLScorer
from vlm_engine.infer import InferenceConfig

RESAMPLES = 1000


def run_arms(arms: dict[str, MLScorer], symbols: int, rounds: int, bars: int) -> None:
    """Time every arm `rounds` times on one batch of `symbols` windows and print the table."""
    windows = live_windows(symbols, max(64, bars))
    names = list(arms)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    signals: dict[str, list[tuple[float, float]]] = {}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            scorer = arms[name]
            c, t = time.process_time(), time.perf_counter()
            out, deferred = scorer.score_deferred(windows)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            scorer.finish(out, deferred)
            signals[name] = [(s.p_up, s.confidence) for s in out]
    differ = [k for k in names if signals[k] != signals[names[0]]]
    same = f"not for {', '.join(differ)}" if differ else "yes"
    print(f"\n{symbols} symbols, {rounds} rounds; {load_average()}; signals identical: {same}")
    base_wall: np.ndarray = np.array(wall[names[0]]) * 1e3
    base_cpu: np.ndarray = np.array(cpu[names[0]]) * 1e3
    rounds_drawn = np.random.default_rng(0).integers(0, rounds, (RESAMPLES, rounds))

    def ratio(arm: np.ndarray, base: np.ndarray, q: float) -> str:
        point = np.percentile(arm, q) / np.percentile(base, q)
        boot = np.percentile(arm[rounds_drawn], q, axis=1) / np.percentile(
            base[rounds_drawn], q, axis=1
        )
        return f"{point:.3f} [{np.percentile(boot, 2.5):.3f}, {np.percentile(boot, 97.5):.3f}]"

    print(
        f"{'arm':>18} {'p10':>6} {'p50':>6} {'p90':>6} {'p99':>6} {'min':>6} {'cpu50':>6}"
        "  ratios to the first arm (ms)"
    )
    for name in names:
        w: np.ndarray = np.array(wall[name]) * 1e3
        c: np.ndarray = np.array(cpu[name]) * 1e3
        print(
            f"{name:>18} {np.percentile(w, 10):6.2f} {np.median(w):6.2f} {np.percentile(w, 90):6.2f} "
            f"{np.percentile(w, 99):6.2f} {w.min():6.2f} {np.median(c):6.2f}  "
            f"p50 {ratio(w, base_wall, 50)}  p90 {ratio(w, base_wall, 90)}  "
            f"p99 {ratio(w, base_wall, 99)}  cpu p50 {ratio(c, base_cpu, 50)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--symbols", default="100,10")
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    models = daemon_models(args.bundle, "auto")
    scorer = ScorerConfig()
    alone = load_bundle(  # on the runtime auto chose for the others (timed: it moves with load)
        args.bundle,
        inference=InferenceConfig(
            device=scorer.device,
            threads=scorer.threads,
            workers=1,
            runtime=models.engine.runtime,  # type: ignore[arg-type]  # one of RuntimeName
        ),
    )
    print(
        f"bench_ml_arms: {load_average()}; serving {models.engine.runtime} on "
        f"{models.engine.workers} workers / {alone.engine.runtime} on 1"
    )
    arms = {
        "before": before_scorer(models),
        "after": models.scorer(),
        "after, 1 worker": alone.scorer(),
    }
    for symbols in (int(s) for s in args.symbols.split(",")):
        run_arms(arms, symbols, args.rounds, models.bars_needed)
    print(f"\nbench_ml_arms done: {load_average()}")


if __name__ == "__main__":
    main()
