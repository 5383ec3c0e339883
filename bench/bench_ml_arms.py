"""The ML order path's scorer call in four arms alternating in one process (issue 16, sixth round):
the CLIP batch schedule before (bench/ml_before.py: each chunk drawn by the thread that took it)
or after (the caller draws every chart, the pool only embeds), each on two bundles, --old (an
INT8 export without folded bias adds) and --new (the same bundle re-exported: `vlmtrader model
export-onnx`). Every round calls each arm once on the same windows, the order reversed every
other round; wall and process CPU time per MLScorer.score_deferred call. Ratios are against the
first arm (before, --old) with 95% intervals from 1,000 bootstrap resamples of rounds (paired:
the same rounds for both arms). The signals of all four arms are checked to be identical.

    .venv/bin/python bench/bench_ml_arms.py --old /work/artifacts/boot96 --new artifacts/boot96 \
        [--symbols 100,10] [--rounds 400]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_ml_pipeline import daemon_models, live_windows, load_average
from ml_before import before_scorer

from strategy.ml_scorer import MLScorer

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
    same = all(signals[k] == signals[names[0]] for k in names)
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
        f"{'arm':>24} {'p10':>6} {'p50':>6} {'p99':>6} {'min':>6} {'cpu50':>6}  ratios to the first arm (ms)"
    )
    for name in names:
        w: np.ndarray = np.array(wall[name]) * 1e3
        c: np.ndarray = np.array(cpu[name]) * 1e3
        print(
            f"{name:>24} {np.percentile(w, 10):6.2f} {np.median(w):6.2f} {np.percentile(w, 99):6.2f} "
            f"{w.min():6.2f} {np.median(c):6.2f}  p50 {ratio(w, base_wall, 50)}  "
            f"p99 {ratio(w, base_wall, 99)}  cpu p50 {ratio(c, base_cpu, 50)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--symbols", default="100,10")
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    old, new = daemon_models(args.old, "auto"), daemon_models(args.new, "auto")
    print(f"bench_ml_arms: {load_average()}; serving {old.engine.runtime} / {new.engine.runtime}")
    arms = {
        "before, old export": before_scorer(old),
        "after, old export": old.scorer(),
        "before, new export": before_scorer(new),
        "after, new export": new.scorer(),
    }
    for symbols in (int(s) for s in args.symbols.split(",")):
        run_arms(arms, symbols, args.rounds, old.bars_needed)
    print(f"\nbench_ml_arms done: {load_average()}")


if __name__ == "__main__":
    main()
