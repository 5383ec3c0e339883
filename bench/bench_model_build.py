"""`vlmtrader model build` wall time per stage on two simulated datasets written as bar files, as a user's would be.

- minute: 8 symbols x 20,000 one-minute bars
- daily:  5 series x 25 years of daily bars (business days, ~6,500 bars each)

Bars carry no planted label: the build labels them with the TA-Lib detectors, as it does a
user's file. Prints wall seconds per stage (data + labels, CLIP, tabular), the held-out
figures and the load average before and after, never pass/fail (goal <= 600 s each with one
torch thread on this 2-core machine).
Run: .venv/bin/python bench/bench_model_build.py [--only minute|daily] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import msgspec
from harness import Session

from daemon.training import (
    BootstrapConfig,
    BuildConfig,
    build,
    quick_build_config,
    sim_bars,
    user_bars,
)
from strategy.market_sim import SimMarketConfig

DATASETS = {
    # name: (symbols, bars per symbol, bar_seconds)
    "minute": (8, 20_000, 60),
    "daily": (5, 25 * 261, 86_400),
}


def bars_file(directory: Path, name: str) -> Path:
    """The dataset as one Parquet file without labels (what `model build --bars` reads)."""
    symbols, n, bar_seconds = DATASETS[name]
    market = SimMarketConfig(
        symbols=tuple(f"S{i}" for i in range(symbols)),
        bar_seconds=bar_seconds,
        pattern_rate=0.0,
        seed=3,
    )
    frame, _ = sim_bars(BootstrapConfig(market=market, bars=n))
    path = directory / f"{name}.parquet"
    frame.drop(columns=["pattern"]).to_parquet(path, index=False)
    return path


def run(name: str, cfg: BuildConfig, directory: Path) -> dict[str, float]:
    path = bars_file(directory, name)
    shutil.rmtree(directory / f"{name}-bundle", ignore_errors=True)
    started = time.perf_counter()
    frame, source = user_bars(path, cfg.labels)
    data = time.perf_counter() - started
    result = build(frame, cfg, directory / f"{name}-bundle", source=source)
    m, on = result.card.metrics, result.card.trained_on
    stages = "  ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
    print(
        f"{name}: {len(frame):,} bars ({frame['symbol'].nunique()} symbols, {on.bar_seconds if on else '?'} s, "
        f"horizon {on.horizon_bars if on else '?'}): wall {data + result.wall_seconds:.1f}s = "
        f"data+labels {data:.1f}s  {stages}"
    )
    print(
        f"  pattern accuracy {m.get('pattern_accuracy', float('nan')):.3f}  macro-F1 "
        f"{m.get('pattern_macro_f1', float('nan')):.3f} (held-out charts)  held-out AUC "
        + "  ".join(
            f"{k} {result.card.figure(f'{k}_holdout_auc', 4)}"
            for k in ("clip", "xgb_technical", "xgb", "fused")
        )
    )
    figures = {"wall_seconds": data + result.wall_seconds, "data_labels_seconds": data}
    figures.update({f"{k}_seconds": v for k, v in result.stage_seconds.items()})
    figures.update({k: float(v) for k, v in m.items() if k.endswith(("_accuracy", "_auc"))})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(DATASETS))
    parser.add_argument("--quick", action="store_true", help="the tiny model (a smoke run)")
    args = parser.parse_args()
    cfg = quick_build_config() if args.quick else BuildConfig()
    cfg = msgspec.structs.replace(cfg, train=msgspec.structs.replace(cfg.train, progress=False))
    with (
        tempfile.TemporaryDirectory(prefix="vlmtrader-bench-build-") as tmp,
        Session("model_build", max_runs=3) as bench,
    ):
        for name in [args.only] if args.only else list(DATASETS):
            bench.until_stable(
                lambda name=name: run(name, cfg, Path(tmp)), key="wall_seconds", prefix=f"{name}_"
            )


if __name__ == "__main__":
    main()
