"""The CLIP image tower sizes bench_tower.py compares: the bootstrap default and cheaper variants.

Each candidate is the default BootstrapConfig with only the chart size and/or the vision tower
changed (training schedule, data, splits and seeds as the default), so its CLIP test split holds
the same rows (symbol, bar) as the default's: the window and the sample draw do not depend on the
chart's pixel size or the model.
Run one build: python bench/tower_candidates.py NAME OUT (prints CPU seconds, wall and load).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import msgspec

from daemon.training import BootstrapConfig, bootstrap
from vlm_engine.clip import ClipModelConfig


def _candidate(*, chart: int = 0, **model: int) -> BootstrapConfig:
    base = BootstrapConfig()
    spec = base.spec
    if chart:
        spec = msgspec.structs.replace(spec, width=chart, height=chart)
    train = msgspec.structs.replace(
        base.train, model=msgspec.structs.replace(base.train.model, **model)
    )
    return msgspec.structs.replace(base, spec=spec, train=train)


CANDIDATES: dict[str, BootstrapConfig] = {
    "default": BootstrapConfig(),
    "chart96": _candidate(chart=96, image_size=96),  # rendered at 96 px: 36 patches, no resize
    "img96": _candidate(image_size=96),  # rendered at 128, resized to 96 in the graph: 36 patches
    "patch32": _candidate(patch_size=32),  # 128 px, 16 patches
    "layer1": _candidate(vision_layers=1),  # 64 patches, one vision layer
    "width48": _candidate(vision_width=48),  # 64 patches, 2 layers of width 48 (4 heads of 12)
}


def describe(cfg: BootstrapConfig) -> str:
    m: ClipModelConfig = cfg.train.model
    patches = (m.image_size // m.patch_size) ** 2
    return (
        f"chart {cfg.spec.width}x{cfg.spec.height}, image {m.image_size}, patch {m.patch_size} "
        f"({patches} patches), {m.vision_layers} layer(s), width {m.vision_width}"
    )


def main() -> None:
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
