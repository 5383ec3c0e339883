"""Tiny CLIP configs, samples and bundles for the clip/calibrate/bundle/infer tests (seconds, CPU)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from daemon.training import quick_config
from strategy.market_sim import SimMarketConfig, simulate_frame
from vlm_engine.bundle import DatasetRef, ModelCard, save_bundle
from vlm_engine.calibrate.evaluate import calibrate_and_measure
from vlm_engine.clip import ClipSamples
from vlm_engine.clip.data import default_prompts
from vlm_engine.clip.quickset import QuicksetConfig, class_names, samples_from_bars
from vlm_engine.clip.train import TrainConfig, TrainResult, main
from vlm_engine.infer.onnx_bundle import export_to_bundle
from vlm_engine.render import ChartWindow

# The same tiny chart spec and model as `vlmtrader model bootstrap --quick`.
SPEC = quick_config().spec
TINY_MODEL = quick_config().train.model
TINY_TRAIN = TrainConfig(model=TINY_MODEL, epochs=1, batch_size=16, warmup_steps=2, progress=False)

_CACHE: dict[str, dict[str, ClipSamples]] = {}


def tiny_splits() -> dict[str, ClipSamples]:
    """Train/validation/test charts of planted patterns from 1,200 simulated bars of two symbols."""
    if "splits" not in _CACHE:
        torch.set_num_threads(1)
        frame = simulate_frame(
            SimMarketConfig(symbols=("SIMA", "SIMB"), pattern_rate=0.08, seed=3),
            datetime(2024, 1, 1, tzinfo=UTC),
            1_200,
        )
        _CACHE["splits"] = samples_from_bars(frame, SPEC, QuicksetConfig(seed=1))
    return _CACHE["splits"]


def tiny_train(cfg: TrainConfig = TINY_TRAIN, **kwargs: object) -> TrainResult:
    splits = tiny_splits()
    return main(
        cfg,
        train=splits["train"],
        val=splits["validation"],
        prompts=default_prompts(class_names(splits)),
        **kwargs,  # type: ignore[arg-type]
    )


def tiny_bundle(out: Path, *, seed: int = 0) -> ModelCard:
    """Train a tiny model for one epoch, calibrate it and save it as a bundle."""
    splits = tiny_splits()
    result = tiny_train(
        TrainConfig(
            model=TINY_MODEL, epochs=1, batch_size=16, warmup_steps=2, progress=False, seed=seed
        )
    )
    calibration, metrics, report, figures = calibrate_and_measure(
        result.parts, result.prompts, splits["validation"], splits["test"], k_folds=3
    )
    return save_bundle(
        out,
        parts=result.parts,
        spec=SPEC,
        prompts=result.prompts,
        dataset=DatasetRef(source="tests", manifest_hash="0" * 16),
        calibration=calibration,
        metrics=metrics,
        calibration_report=report,
        figures=figures,
    )


def tiny_exported_bundle(out: Path) -> Path:
    """The tiny bundle with its image tower exported to ONNX (fp32; INT8 where parity holds)."""
    tiny_bundle(out, seed=0)
    splits = tiny_splits()
    export_to_bundle(out, train=splits["train"], test=splits["test"])
    return out


def chart_dataset(root: Path) -> Path:
    """`vlmtrader dataset build` on 900 simulated bars of two symbols (quick spec, stride 8): a
    dataset directory of 150 train / 24 validation / 26 test charts, root/"ds"."""
    import msgspec

    from daemon.cli import main as cli

    bars = root / "bars.csv"
    simulate_frame(
        SimMarketConfig(symbols=("SIMA", "SIMB"), seed=5), datetime(2024, 1, 1, tzinfo=UTC), 900
    ).drop(columns=["pattern", "direction"]).to_csv(bars, index=False)
    spec = root / "dataset.yaml"
    spec.write_bytes(msgspec.yaml.encode({"spec": quick_config().spec, "stride": 8}))
    ds = root / "ds"
    args = ["dataset", "build", "--bars", str(bars), "--out", str(ds), "--spec", str(spec)]
    assert cli([*args, "--no-progress"]) == 0
    return ds


def window(n: int = 40, *, seed: int = 0, symbol: str = "SIMA") -> ChartWindow:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[100.0, close[:-1]]
    return ChartWindow(
        symbol=symbol,
        bar_seconds=60,
        timestamps=1_700_000_040 + 60 * np.arange(n, dtype=np.int64),
        open=open_,
        high=np.maximum(open_, close) * 1.001,
        low=np.minimum(open_, close) * 0.999,
        close=close,
        volume=rng.uniform(100, 1000, n),
    )
