"""Search charts with words: precision@20 of each detector-defined pattern's text on HELD-OUT bars.

For each pattern the TA-Lib detectors define (the build's label set), the bundle's CLIP ranks
every held-out chart window by similarity to the pattern's text ("a candlestick chart ending in
a hammer"); precision@20 is the share of the 20 best windows whose last bar carries that label,
with its Wilson 95% interval, beside the pattern's base rate on the same windows (what a random
pick of 20 would score). Held out means charts ending at or after the bundle's holdout_start
(nothing in the bundle was fitted on those bars). For a bundle built here from the simulator the
planted labels are scored too. Also prints the bundle's analog index (rows, bytes per chart,
build seconds) and the load average; never pass/fail.

Run: .venv/bin/python bench/bench_search.py [--quick]          (builds a bundle from the simulator)
     .venv/bin/python bench/bench_search.py --bundle DIR --bars FILE   (a `model build` bundle and its bars)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
from harness import Session, load_line

from daemon.training import (
    BootstrapConfig,
    LabelConfig,
    bootstrap,
    detector_labels,
    quick_config,
    sim_bars,
)
from daemon.training.sources import user_bars
from strategy.market_sim import SimMarketConfig
from strategy.sim_patterns import ALL_PATTERNS
from vlm_engine.bundle import ModelCard, read_card
from vlm_engine.clip.search import WindowIndex, chart_windows, pattern_precision, precision_at_k
from vlm_engine.dataset.bars import symbol_windows
from vlm_engine.infer import InferenceConfig, load_engine

K = 20


def bench_config(quick: bool) -> BootstrapConfig:
    """The quick bootstrap (a smoke run), or the same tiny model on 4 symbols x 8,000 bars of every
    candlestick pattern, trained longer: big enough that 20 held-out hits mean something."""
    cfg = quick_config()
    if quick:
        return cfg
    return msgspec.structs.replace(
        cfg,
        market=SimMarketConfig(
            symbols=("SIMA", "SIMB", "SIMC", "SIMD"),
            pattern_rate=0.08,
            seed=11,
            patterns=ALL_PATTERNS,
        ),
        bars=8_000,
        train=msgspec.structs.replace(cfg.train, epochs=8, learning_rate=1e-3),
    )


def held_out(frame: pd.DataFrame, card: ModelCard, bars_needed: int) -> WindowIndex:
    """Every chart window ending on a held-out bar (>= holdout_start, else after the fitted range),
    labelled by the frame's `pattern` column."""
    on = card.trained_on
    if on is None:
        msg = "the bundle's card has no trained_on: cannot tell held-out bars from training ones"
        raise SystemExit(msg)
    start = on.holdout_start or on.end + 1
    labels = {
        str(s): g["pattern"].fillna("").astype(str).tolist()
        for s, g in frame.groupby("symbol", sort=True)
    }
    index = chart_windows(
        symbol_windows(frame), bars_needed=bars_needed, horizon=on.horizon_bars, labels=labels
    )
    rows = np.flatnonzero(index.ts >= start)
    if rows.size < K:
        msg = f"only {rows.size} held-out windows (from {pd.Timestamp(start, unit='s')}): need more bars"
        raise SystemExit(msg)
    return index.take(rows)


def texts_for(card: ModelCard, patterns: tuple[str, ...]) -> dict[str, str]:
    """Each pattern's text: the bundle's first prompt for it, else the prompts' template."""
    out = {}
    for name in patterns:
        prompts = card.prompts.patterns.get(name)
        out[name] = (
            prompts[0] if prompts else f"a candlestick chart ending in a {name.replace('_', ' ')}"
        )
    return out


def report(title: str, rows: list, bench: Session, prefix: str) -> None:
    print(f"{title}")
    print(
        f"  {'pattern':<22} {'p@20':>5} {'95% Wilson':>15} {'base rate':>9} {'lift':>6} {'labelled':>8}"
    )
    for r in rows:
        lift = r.precision / r.base_rate if r.base_rate else float("nan")
        print(
            f"  {r.pattern:<22} {r.precision:>5.2f} [{r.low:.2f}, {r.high:.2f}] {r.base_rate:>9.4f} "
            f"{lift:>6.1f} {r.positives:>5}/{r.windows}"
        )
        bench.add(prefix=f"{prefix}{r.pattern}_", precision_at_20=r.precision, ci_low=r.low,
                  ci_high=r.high, base_rate=r.base_rate, positives=r.positives)  # fmt: skip
    scored = [r for r in rows if r.positives]
    if scored:
        mean = float(np.mean([r.precision for r in scored]))
        base = float(np.mean([r.base_rate for r in scored]))
        print(
            f"  mean over {len(scored)} patterns with labels: p@20 {mean:.3f}, base rate {base:.4f}"
        )
        bench.add(prefix=prefix, mean_precision_at_20=mean, mean_base_rate=base)


def analog_figures(card: ModelCard, bench: Session) -> None:
    stage = card.stages.get("analogs")
    if not isinstance(stage, dict):
        print("analog index: none in this bundle")
        return
    print(
        f"analog index: {stage['rows']} rows of {stage['training_charts']} training charts (cap "
        f"{stage['max_rows']}), {stage['bytes_per_chart']} bytes per chart PNG, "
        f"{stage['total_bytes'] / 1e6:.2f} MB in all, built in {stage['seconds']} s"
    )
    bench.add(prefix="analogs_", rows=stage["rows"], bytes_per_chart=stage["bytes_per_chart"],
              total_bytes=stage["total_bytes"], build_seconds=stage["seconds"])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick bootstrap bundle")
    parser.add_argument("--bundle", type=Path, help="an existing bundle (with --bars)")
    parser.add_argument(
        "--bars", type=Path, help="the bars the bundle was built from (or later ones)"
    )
    args = parser.parse_args()
    if (args.bundle is None) != (args.bars is None):
        parser.error("--bundle and --bars go together")
    with (
        tempfile.TemporaryDirectory(prefix="vlmtrader-bench-search-") as tmp,
        Session("search") as bench,
    ):
        planted: pd.DataFrame | None = None
        if args.bundle is None:
            cfg = bench_config(args.quick)
            bundle = Path(tmp) / "bundle"
            _, wall = bootstrap(cfg, bundle)
            print(
                f"built {bundle} from the simulator in {wall:.0f} s ({cfg.bars} bars x {len(cfg.market.symbols)} symbols); {load_line()}"
            )
            frame, _ = sim_bars(cfg)
            planted = frame
            frame = detector_labels(frame.drop(columns=["pattern"]), LabelConfig())
        else:
            bundle = args.bundle
            frame, _ = user_bars(args.bars, LabelConfig())
        card = read_card(bundle)
        analog_figures(card, bench)
        engine = load_engine(bundle, config=InferenceConfig(threads=1))
        index = held_out(frame, card, engine.spec.bars_needed)
        texts = texts_for(card, LabelConfig().patterns)
        started = time.perf_counter()
        rows, scores = pattern_precision(engine, index, texts, k=K)
        seconds = time.perf_counter() - started
        print(
            f"{len(index)} held-out windows scored in {seconds:.1f} s ({len(index) / seconds:.0f} charts/s); {load_line()}"
        )
        bench.add(held_out_windows=len(index), charts_per_second=len(index) / seconds)
        report("detector labels (TA-Lib) on the held-out bars:", rows, bench, "detector_")
        if planted is not None:  # the same windows and texts, the simulator's own labels
            again = held_out(planted, card, engine.spec.bars_needed)
            if not np.array_equal(again.ts, index.ts) or again.symbols != index.symbols:
                msg = "the planted and the detector-labelled frames cut different windows"
                raise SystemExit(msg)
            report("planted labels (the simulator's) on the held-out bars:",
                   precision_at_k(again, scores, texts, k=K), bench, "planted_")  # fmt: skip


if __name__ == "__main__":
    main()
