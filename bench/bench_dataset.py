"""Dataset build throughput: samples/s of build_dataset (render + labels + PNG + HF/Parquet write).

Prints figures and the projection to 20k samples (goal < 300 s on this 2-core machine), never
pass/fail; with --samples 20000 the 20k figure is measured, not projected.
Run: .venv/bin/python bench/bench_dataset.py [--samples N] [--renderer numpy|mplfinance]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import pandas as pd
from harness import Session, quick

from vlm_engine.dataset.builder import DatasetConfig, build_dataset

SYMBOLS = 4


def bars(samples: int, cfg: DatasetConfig) -> pd.DataFrame:
    """Random-walk bars for 4 symbols, enough for about `samples` samples at stride 1 (before the embargo)."""
    n = samples // SYMBOLS + cfg.spec.bars_needed + cfg.outcome.horizon
    rng = np.random.default_rng(1)
    frames = []
    for i in range(SYMBOLS):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
        open_ = np.r_[100.0, close[:-1]]
        frames.append(
            pd.DataFrame(
                {
                    "symbol": f"S{i}",
                    "ts": pd.to_datetime(1_700_000_000 + np.arange(n) * 60, unit="s", utc=True),
                    "open": open_,
                    "high": np.maximum(open_, close) * (1 + rng.uniform(0, 0.001, n)),
                    "low": np.minimum(open_, close) * (1 - rng.uniform(0, 0.001, n)),
                    "close": close,
                    "volume": rng.uniform(100, 1000, n),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000 if quick() else 4000)
    parser.add_argument("--renderer", choices=("numpy", "mplfinance"), default="numpy")
    args = parser.parse_args()
    renderer: Literal["numpy", "mplfinance"] = args.renderer
    cfg = DatasetConfig(stride=1)
    cfg = msgspec.structs.replace(cfg, spec=msgspec.structs.replace(cfg.spec, renderer=renderer))
    frame = bars(args.samples, cfg)
    with Session("dataset") as bench:
        bench.until_stable(lambda: measure(frame, cfg, renderer), key="samples_per_s")


def measure(frame: pd.DataFrame, cfg: DatasetConfig, renderer: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = build_dataset(frame, cfg, out=Path(tmp))
        dt = time.perf_counter() - t0
    total = sum(manifest.counts.values())
    per_s = total / dt
    print(
        f"== dataset build: {total} samples kept ({manifest.embargoed} embargoed), "
        f"default spec, {renderer} renderer, hf + parquet, 1 process"
    )
    print(
        f"{per_s:8.0f} samples/s, {dt:.1f} s  -> 20k samples in {20_000 / per_s:.0f} s "
        f"(goal < 300 s on 2 cores)"
    )
    return {"samples_per_s": per_s, "seconds": dt, "samples": float(total)}


if __name__ == "__main__":
    main()
