"""The CLIP image tower sizes bench_tower.py compares: the 128 px bootstrap default until
2026-12-02 (base128) and cheaper variants; chart96 was the default until 2026-12-03, chart80 is
today's (daemon/training/config.py).

Each candidate is the default BootstrapConfig with only the chart size, the vision tower and/or
the epochs set (the rest as the default: data, splits, seeds, training schedule), so its CLIP test split
holds the same rows (symbol, bar) for all: the window and the sample draw do not depend on the
chart's pixel size or the model.
Run one build: python bench/tower_candidates.py NAME OUT (prints CPU seconds, wall and load);
the held-out bars for `vlmtrader evaluate`: python bench/tower_candidates.py --holdout-bars FILE.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import msgspec
import numpy as np

from daemon.training import DEFAULT_SPEC, BootstrapConfig, bootstrap, sim_bars
from daemon.training.config import previous_bootstrap_config
from daemon.training.pipeline import time_split
from vlm_engine.clip import ClipModelConfig
from vlm_engine.dataset.bars import ts_seconds


def _candidate(
    *, chart: int = 128, epochs: int = 14, seed: int = 0, **model: int
) -> BootstrapConfig:
    """The bootstrap config with charts of chart x chart px, `epochs` epochs and the embedded CLIP's
    sizes changed from ClipModelConfig's (image 128, patch 16, 2 vision layers of width 64)."""
    base = BootstrapConfig()
    spec = msgspec.structs.replace(DEFAULT_SPEC, width=chart, height=chart)
    train = msgspec.structs.replace(
        base.train, model=ClipModelConfig(**model), epochs=epochs, seed=seed
    )
    return msgspec.structs.replace(base, spec=spec, train=train)


CANDIDATES: dict[str, BootstrapConfig] = {
    "base128": previous_bootstrap_config(),  # the default until 2026-12-02: 128 px, 64 patches
    "chart96": _candidate(chart=96, image_size=96),  # rendered at 96 px: 36 patches, no resize
    # the same with 18 epochs: chart96's validation accuracy was still rising at its 14th
    "chart96e18": _candidate(chart=96, image_size=96, epochs=18),
    # a second training seed of base128 and chart96: how far one build's figures move by chance
    "base128s1": _candidate(seed=1),
    "chart96s1": _candidate(chart=96, image_size=96, seed=1),
    "img96": _candidate(image_size=96),  # rendered at 128, resized to 96 in the graph: 36 patches
    "patch32": _candidate(patch_size=32),  # 128 px, 16 patches
    "layer1": _candidate(vision_layers=1),  # 64 patches, one vision layer
    "width48": _candidate(vision_width=48),  # 64 patches, 2 layers of width 48 (4 heads of 12)
    # issue 16, fifth round: chart96 with a narrower tower (2 layers of width 48, 4 heads of 12).
    # Built once (seed 0, 66 CPU s): its static INT8 tower 0.063 vs chart96's 0.076 CPU ms per chart
    # (0.83x, same run, batch 50, load 2.2); card: pattern accuracy 0.989 vs 0.979, direction AUC
    # 0.803 vs 0.819 on the 720 test charts. Not taken as the default: 17% of the tower is ~1 ms
    # of CPU at 100 charts, and the direction AUC was not shown to hold (no paired CI measured).
    "chart96w48": _candidate(chart=96, image_size=96, vision_width=48),
    # issue 16, ninth round: fewer tokens for the ML order p99 at 100 symbols, the same 20 candles
    # drawn at the model's input size (patch 16): 80 px, 25 patches (4 px per candle); 64 px,
    # 16 patches (3.2 px per candle); and 80 px with the narrower tower of chart96w48.
    "chart80": _candidate(chart=80, image_size=80),
    "chart64": _candidate(chart=64, image_size=64),
    "chart80w48": _candidate(chart=80, image_size=80, vision_width=48),
    # their second training seed, paired with chart96s1 (bench_tower.py --ref chart96)
    "chart80s1": _candidate(chart=80, image_size=80, seed=1),
    "chart64s1": _candidate(chart=64, image_size=64, seed=1),
}


def describe(cfg: BootstrapConfig) -> str:
    m: ClipModelConfig = cfg.train.model
    patches = (m.image_size // m.patch_size) ** 2
    return (
        f"chart {cfg.spec.width}x{cfg.spec.height}, image {m.image_size}, patch {m.patch_size} "
        f"({patches} patches), {m.vision_layers} layer(s), width {m.vision_width}, "
        f"{cfg.train.epochs} epochs, seed {cfg.train.seed}"
    )


def write_holdout_bars(out: Path) -> None:
    """The bootstrap's held-out bars (every candidate's: same market, same cuts) as a bars file
    for `vlmtrader evaluate --bars`, without the planted labels."""
    cfg = BootstrapConfig()
    frame, _ = sim_bars(cfg)
    ts = ts_seconds(frame)
    held = frame[ts >= time_split(np.unique(ts), cfg).holdout_start]
    held.drop(columns=["pattern"]).to_parquet(out, index=False)
    print(f"{out}: {len(held)} held-out bars of {held['symbol'].nunique()} symbols")


def main() -> None:
    if sys.argv[1] == "--holdout-bars":
        write_holdout_bars(Path(sys.argv[2]))
        return
    name, out = sys.argv[1], Path(sys.argv[2])
    cfg = CANDIDATES[name]
    print(f"{name}: {describe(cfg)}; load at start {os.getloadavg()}", flush=True)
    cpu = time.process_time()
    card, wall = bootstrap(cfg, out)
    m = card.metrics
    print(
        f"{name}: bootstrap wall {wall:.1f} s, process CPU {time.process_time() - cpu:.1f} s; "
        f"pattern accuracy {m['pattern_accuracy']:.4f}, direction AUC {m['direction_auc']:.4f}; "
        f"load at end {os.getloadavg()}",
        flush=True,
    )


if __name__ == "__main__":
    main()
