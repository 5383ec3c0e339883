"""The CLIP test split is the same rows whatever the chart's pixel size: what lets bench/bench_tower.py
score a smaller chart or tower on the default's test rows."""

from __future__ import annotations

import msgspec
import numpy as np

from daemon.training import quick_config, sim_bars
from vlm_engine.clip.quickset import samples_from_bars


def test_samples_when_chart_drawn_at_another_size_then_same_rows_and_labels() -> None:
    cfg = quick_config()
    frame, _ = sim_bars(cfg)
    small = msgspec.structs.replace(cfg.spec, width=48, height=48)

    at_64 = samples_from_bars(frame, cfg.spec, cfg.samples)["test"]
    at_48 = samples_from_bars(frame, small, cfg.samples)["test"]

    assert at_64.origins is not None
    assert at_48.origins is not None
    assert len(at_64) > 20
    assert at_48.origins.symbols == at_64.origins.symbols
    np.testing.assert_array_equal(at_48.origins.ts, at_64.origins.ts)
    assert at_48.patterns == at_64.patterns
    np.testing.assert_array_equal(at_48.direction, at_64.direction)
    assert at_64.images.shape[1:3] == (64, 64)
    assert at_48.images.shape[1:3] == (48, 48)
