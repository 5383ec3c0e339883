"""Charts/s of the NumPy rasterizer and the mplfinance renderer, their pixel agreement, and dataset build rate.

Prints figures and ratios, never pass/fail.
Run: .venv/bin/python bench/bench_render.py [--charts N] [--dataset-samples N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

from vlm_engine.dataset.builder import DatasetConfig, build_dataset
from vlm_engine.render import ChartSpec, make_window
from vlm_engine.render.mpl import MplfinanceRenderer, render_batch_parallel
from vlm_engine.render.raster import NumpyRenderer


def windows(count: int, spec: ChartSpec) -> list:
    rng = np.random.default_rng(0)
    n = spec.bars_needed
    out = []
    for i in range(count):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        open_ = np.r_[100.0, close[:-1]]
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.004, n))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.004, n))
        out.append(
            make_window(
                symbol=f"S{i % 4}",
                bar_seconds=60,
                ts=np.arange(n) * 60,
                open=open_,
                high=high,
                low=low,
                close=close,
                volume=rng.uniform(100, 1000, n),
            )
        )
    return out


def rate(fn, items) -> float:
    fn(items[:2])
    t0 = time.perf_counter()
    fn(items)
    return len(items) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charts", type=int, default=400)
    parser.add_argument(
        "--dataset-samples", type=int, default=2000, help="0 skips the dataset build"
    )
    args = parser.parse_args()
    for label, spec in (
        ("default", ChartSpec()),
        ("full (rsi+macd+2 sma)", ChartSpec(rsi=True, macd=True, sma=(10, 30))),
    ):
        ws = windows(args.charts, spec)
        numpy_r = NumpyRenderer(spec=spec)
        mpl_spec = msgspec.structs.replace(spec, renderer="mplfinance")
        mpl_r = MplfinanceRenderer(spec=mpl_spec)
        mpl_n = max(50, args.charts // 4)
        r_np = rate(numpy_r.render_batch, ws)
        r_mpl = rate(mpl_r.render_batch, ws[:mpl_n])
        r_pool = rate(
            lambda w, s=mpl_spec: render_batch_parallel(s, w, processes=2), ws[: mpl_n * 2]
        )
        a = numpy_r.render_batch(ws[:50]).astype(np.int16)
        b = mpl_r.render_batch(ws[:50]).astype(np.int16)
        close = (np.abs(a - b).max(axis=-1) <= 48).mean()
        bg = np.array([0, 0, 0], dtype=np.int16)
        ink_a, ink_b = (a != bg).any(-1), (b != bg).any(-1)
        iou = (ink_a & ink_b).sum() / max((ink_a | ink_b).sum(), 1)
        print(
            f"== spec {label} ({spec.spec_hash()}, {spec.width}x{spec.height}, window {spec.window})"
        )
        print(
            f"numpy        {r_np:9.0f} charts/s  {1e3 / r_np:7.3f} ms/chart  (goal >= 2000/s on one core)"
        )
        print(
            f"mplfinance   {r_mpl:9.0f} charts/s  {1e3 / r_mpl:7.3f} ms/chart  (goal <= 15 ms, fresh figure ~38-47 ms)"
        )
        print(f"mpl pool x2  {r_pool:9.0f} charts/s  (process pool incl. start-up)")
        print(f"ratio numpy/mplfinance: {r_np / r_mpl:.1f}x")
        print(f"pixel agreement (max channel diff <= 48): {close:.3f}   ink-mask IoU: {iou:.3f}")
    if args.dataset_samples:
        dataset_rate(args.dataset_samples)


def dataset_rate(samples: int) -> None:
    """Build a dataset of about `samples` samples (stride 1, 4 symbols) and print samples/s."""
    import pandas as pd

    symbols = 4
    cfg = DatasetConfig(stride=1)
    n = samples // symbols + cfg.spec.bars_needed + cfg.outcome.horizon
    rng = np.random.default_rng(1)
    frames = []
    for i in range(symbols):
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
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = build_dataset(pd.concat(frames), cfg, out=Path(tmp))
        dt = time.perf_counter() - t0
    total = sum(manifest.counts.values())
    print(
        f"== dataset build ({total} samples kept, {manifest.embargoed} embargoed, default spec, hf + parquet)"
    )
    print(
        f"{total / dt:9.0f} samples/s  -> 20k samples in {20_000 / (total / dt):.0f} s (goal < 300 s on 2 cores)"
    )


if __name__ == "__main__":
    main()
