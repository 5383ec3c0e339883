"""Charts/s of the NumPy rasterizer and the mplfinance renderer (serial and pool), their pixel
agreement, and the accuracy of a small classifier trained on one renderer's charts and served
the other's.

Prints figures and ratios, never pass/fail. The machine load is printed with the figures: on a
shared 2-core machine every number moves with it.
Run: .venv/bin/python bench/bench_render.py [--charts N] [--transfer-bars N] [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
from harness import Session, quick

from strategy.market_sim import SimMarketConfig, simulate_frame
from vlm_engine.render import ChartSpec, ChartWindow, make_window
from vlm_engine.render.mpl import MplfinancePool, MplfinanceRenderer
from vlm_engine.render.raster import NumpyRenderer

# the CLIP model bundles' chart (daemon/training/config.py DEFAULT_SPEC): 20 bars, 128 px, plain candles
CLIP_SPEC = ChartSpec(window=20, width=128, height=128, volume=False, bollinger=False, sma=())
SPECS = {
    "default": ChartSpec(),
    "clip-bundle": CLIP_SPEC,
    "full (rsi+macd+2 sma)": ChartSpec(rsi=True, macd=True, sma=(10, 30)),
}
Images = npt.NDArray[np.uint8]


def windows(count: int, spec: ChartSpec, seed: int = 0) -> list[ChartWindow]:
    rng = np.random.default_rng(seed)
    n = spec.bars_needed
    out = []
    for i in range(count):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        open_ = np.r_[100.0, close[:-1]]
        out.append(
            make_window(
                symbol=f"S{i % 4}",
                bar_seconds=60,
                timestamps=np.arange(n) * 60,
                open=open_,
                high=np.maximum(open_, close) * (1 + rng.uniform(0, 0.004, n)),
                low=np.minimum(open_, close) * (1 - rng.uniform(0, 0.004, n)),
                close=close,
                volume=rng.uniform(100, 1000, n),
            )
        )
    return out


def rate(fn: Callable[[Sequence[ChartWindow]], object], items: Sequence[ChartWindow]) -> float:
    """Charts/s, best of three runs after a warm-up."""
    fn(items[:2])
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


def numpy_rates(count: int) -> dict[str, float]:
    print("== NumPy rasterizer, one process (goal >= 2000 charts/s at the default spec)")
    figures = {}
    for label, spec in SPECS.items():
        ws = windows(count, spec)
        renderer = NumpyRenderer(spec=spec)
        out = np.empty((len(ws), spec.height, spec.width, 3), dtype=np.uint8)
        r_batch = rate(lambda w, r=renderer: r.render_batch(w), ws)
        r_out = rate(
            lambda w, r=renderer, o=out: r.render_batch(w, out=o[: len(w)]),
            ws,
        )
        r_one = rate(lambda w, r=renderer: [r.render(x) for x in w], ws)
        print(
            f"{label:22s} {spec.width}x{spec.height} w{spec.window:<3d} "
            f"batch {r_batch:7.0f}/s ({1e3 / r_batch:.3f} ms)  into out= {r_out:7.0f}/s  "
            f"one at a time {r_one:6.0f}/s ({1e3 / r_one:.3f} ms)  batch/one {r_batch / r_one:.1f}x"
        )
        figures[f"numpy_{label}_batch_charts_per_s"] = r_batch
        figures[f"numpy_{label}_one_charts_per_s"] = r_one
    return figures


def mpl_rates(count: int) -> dict[str, float]:
    print("== mplfinance (goal <= 15 ms/chart with reused figures; fresh figure ~38-47 ms)")
    figures: dict[str, float] = {}
    for label, spec in SPECS.items():
        mpl_spec = msgspec.structs.replace(spec, renderer="mplfinance")
        ws = windows(count, spec, seed=1)
        serial = MplfinanceRenderer(spec=mpl_spec)
        r_serial = rate(serial.render_batch, ws)
        figures[f"mpl_{label}_serial_charts_per_s"] = r_serial
        line = f"{label:22s} serial {r_serial:5.0f}/s ({1e3 / r_serial:5.2f} ms)"
        for chunk in (4, 16):
            t0 = time.perf_counter()
            with MplfinancePool(spec=mpl_spec, processes=2, chunk_size=chunk) as pool:
                pool.warm_up()
                start = time.perf_counter() - t0
                r_pool = rate(pool.render_batch, ws)
            figures[f"mpl_{label}_pool2_chunk{chunk}_charts_per_s"] = r_pool
            line += f" | pool x2 chunk {chunk:2d}: {r_pool:5.0f}/s ({r_pool / r_serial:.2f}x serial, start-up {start:.2f}s)"
        print(line)
    return figures


def agreement(count: int) -> dict[str, float]:
    print("== pixel agreement numpy vs mplfinance (same windows)")
    figures: dict[str, float] = {}
    for label, spec in SPECS.items():
        ws = windows(count, spec, seed=2)
        a = NumpyRenderer(spec=spec).render_batch(ws).astype(np.int16)
        b = MplfinanceRenderer(spec=msgspec.structs.replace(spec, renderer="mplfinance"))
        bi = b.render_batch(ws).astype(np.int16)
        close = (np.abs(a - bi).max(axis=-1) <= 48).mean()
        bg = np.array([0, 0, 0], dtype=np.int16)
        ink_a, ink_b = (a != bg).any(-1), (bi != bg).any(-1)
        iou = (ink_a & ink_b).sum() / max((ink_a | ink_b).sum(), 1)
        print(f"{label:22s} pixels within 48/255: {close:.3f}   ink-mask IoU: {iou:.3f}")
        figures[f"agreement_{label}_pixels_within_48"] = float(close)
        figures[f"agreement_{label}_ink_iou"] = float(iou)
    return figures


# ---- train on one renderer, serve the other -----------------------------------------------


def pattern_samples(
    spec: ChartSpec, bars: int, seed: int = 11
) -> dict[str, tuple[list[ChartWindow], list[str]]]:
    """Charts ending on the simulator's planted patterns (+ 'none' charts), time-split 70/30 per symbol."""
    market = SimMarketConfig(symbols=("SA", "SB", "SC", "SD"), pattern_rate=0.05, seed=seed)
    frame = simulate_frame(market, datetime(2024, 1, 1, tzinfo=UTC), bars)
    need = spec.bars_needed
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[list[ChartWindow], list[str]]] = {"train": ([], []), "test": ([], [])}
    for symbol, g in frame.groupby("symbol", sort=True):
        ts = pd.DatetimeIndex(g["ts"]).as_unit("s").asi8
        cols = {c: g[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume")}
        pattern = g["pattern"].fillna("").astype(str).to_numpy()
        n = len(g)
        cut = int(n * 0.7)
        recent = np.convolve((pattern != "").astype(np.int64), np.ones(4, dtype=np.int64))[:n]
        for split, lo, hi in (("train", need - 1, cut - need), ("test", cut, n)):
            idx = np.arange(lo, hi)
            planted = idx[pattern[idx] != ""]
            free = idx[recent[idx] == 0]
            none = rng.choice(free, size=min(free.size, planted.size // 8), replace=False)
            for i in np.sort(np.concatenate([planted, none])).tolist():
                s = i + 1 - need
                out[split][0].append(
                    ChartWindow(
                        symbol=str(symbol),
                        bar_seconds=60,
                        timestamps=ts[s : i + 1],
                        **{c: v[s : i + 1] for c, v in cols.items()},
                    )
                )
                out[split][1].append(pattern[i] or "none")
    return out


def features(images: Images, grid: int = 32) -> npt.NDArray[np.float32]:
    """Grey levels average-pooled to about grid x grid, flattened."""
    grey = images.astype(np.float32).mean(-1) / 255.0
    b, h, w = grey.shape
    pool = max(1, min(h, w) // grid)
    grey = grey[:, : h // pool * pool, : w // pool * pool]
    return grey.reshape(b, h // pool, pool, w // pool, pool).mean((2, 4)).reshape(b, -1)


def fit_softmax(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], k: int, steps: int = 300
) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.int64]]:
    """Multinomial logistic regression (standardised inputs, L2 1e-3, full-batch Adam)."""
    mu, sd = x.mean(0), x.std(0) + 1e-3
    xs = (x - mu) / sd
    weights = np.zeros((x.shape[1], k), np.float32)
    bias = np.zeros(k, np.float32)
    params = (weights, bias)
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    onehot = np.eye(k, dtype=np.float32)[y]
    for t in range(1, steps + 1):
        z = xs @ weights + bias
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        grads = (xs.T @ (p - onehot) / len(y) + 1e-3 * weights, (p - onehot).mean(0))
        for param, grad, (m, v) in zip(params, grads, moments, strict=True):
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            param -= 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)

    def predict(q: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        return np.asarray((((q - mu) / sd) @ weights + bias).argmax(1), dtype=np.int64)

    return predict


def transfer(bars: int) -> dict[str, float]:
    print(
        "== train on one renderer, serve the other: 9-way planted-pattern accuracy "
        "(softmax regression on 32x32 grey pixels; simulated market, 70/30 time split)"
    )
    figures: dict[str, float] = {}
    for label, spec in (("clip-bundle", CLIP_SPEC), ("default", ChartSpec())):
        t0 = time.perf_counter()
        data = pattern_samples(spec, bars)
        classes = sorted(set(data["train"][1]) | set(data["test"][1]))
        y = {s: np.array([classes.index(p) for p in data[s][1]]) for s in data}
        images: dict[tuple[str, str], Images] = {}
        mpl_spec = msgspec.structs.replace(spec, renderer="mplfinance")
        with MplfinancePool(spec=mpl_spec, processes=2, chunk_size=8) as pool:
            for split, (ws, _) in data.items():
                images[("numpy", split)] = NumpyRenderer(spec=spec).render_batch(ws)
                images[("mplfinance", split)] = pool.render_batch(ws)
        acc: dict[tuple[str, str], float] = {}
        for trained in ("numpy", "mplfinance"):
            model = fit_softmax(features(images[(trained, "train")]), y["train"], len(classes))
            for served in ("numpy", "mplfinance"):
                hits = model(features(images[(served, "test")])) == y["test"]
                acc[(trained, served)] = float(hits.mean())
                figures[f"transfer_{label}_{trained}_to_{served}_accuracy"] = float(hits.mean())
        chance = np.bincount(y["test"]).max() / len(y["test"])
        print(
            f"{label:12s} train {len(y['train'])} / test {len(y['test'])} charts, "
            f"majority class {chance:.3f}, {time.perf_counter() - t0:.0f} s"
        )
        print(f"{'':12s} {'trained on':>12s} | served numpy | served mplfinance")
        for trained in ("numpy", "mplfinance"):
            print(
                f"{'':12s} {trained:>12s} |        {acc[(trained, 'numpy')]:.3f} |"
                f"             {acc[(trained, 'mplfinance')]:.3f}"
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charts", type=int, default=512, help="charts per NumPy rate")
    parser.add_argument("--mpl-charts", type=int, default=96, help="charts per mplfinance rate")
    parser.add_argument(
        "--transfer-bars",
        type=int,
        default=30_000,
        help="simulated bars per symbol for the train/serve matrix (0 skips it)",
    )
    parser.add_argument("--quick", action="store_true", help="NumPy rates only")
    args = parser.parse_args()
    with Session("render") as bench:
        bench.until_stable(
            lambda: numpy_rates(args.charts), key=f"numpy_{next(iter(SPECS))}_batch_charts_per_s"
        )
        if not (args.quick or quick()):
            bench.until_stable(
                lambda: mpl_rates(args.mpl_charts),
                key=f"mpl_{next(iter(SPECS))}_serial_charts_per_s",
            )
            same = "the same windows and renderers give the same pixels"
            bench.measured_once(agreement(48), why=same)
            if args.transfer_bars:
                seeded = "fixed seeds: the same charts, split and fit every time"
                bench.measured_once(transfer(args.transfer_bars), why=seeded)
    print("dataset build throughput: bench/bench_dataset.py")


if __name__ == "__main__":
    main()
