"""The default bundle's chart and image tower (bench/bench_tower.py), and the property that bench
rests on: the CLIP test split is the same rows whatever the chart's pixel size."""

from __future__ import annotations

import msgspec
import numpy as np

from daemon.training import DEFAULT_SPEC, BootstrapConfig, BuildConfig, quick_config, sim_bars
from daemon.training.config import bootstrap_config_96, previous_bootstrap_config
from daemon.training.export_onnx import candidate_configs
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


def test_bootstrap_default_when_built_then_charts_are_drawn_at_the_models_input_size() -> None:
    # Changed 2026-12-03 from 96 px / 36 patches (2026-12-02 from 128 px / 64 patches): 80 px charts
    # into an 80 px tower cost 1.4x less per chart, every paired interval holding 0 on two seeds.
    cfg = BootstrapConfig()
    model = cfg.train.model
    assert (cfg.spec.width, cfg.spec.height) == (80, 80)
    assert model.image_size == cfg.spec.width
    assert (model.image_size // model.patch_size) ** 2 == 25
    assert cfg.spec.window == DEFAULT_SPEC.window
    # user bars keep the 128 px chart: the smaller ones were measured on the simulated market only
    assert BuildConfig().spec == DEFAULT_SPEC
    assert BuildConfig().train.model.image_size == 128


def test_export_onnx_when_sim_bundle_then_tries_the_earlier_defaults_too() -> None:
    source = "sim:seed=11:bars=30000:symbols=8"
    previous = previous_bootstrap_config()
    assert previous.spec == DEFAULT_SPEC
    assert previous.train.model.image_size == 128
    at_96 = bootstrap_config_96()
    assert (at_96.spec.width, at_96.spec.height, at_96.train.model.image_size) == (96, 96, 96)
    # only the chart and the tower differ from today's default: same data, splits, seeds
    assert (
        msgspec.structs.replace(at_96, spec=BootstrapConfig().spec, train=BootstrapConfig().train)
        == BootstrapConfig()
    )
    assert msgspec.structs.replace(previous, spec=BootstrapConfig().spec) != BootstrapConfig()
    tried = candidate_configs(source, None)
    assert tried[:3] == [BootstrapConfig(), at_96, previous]
