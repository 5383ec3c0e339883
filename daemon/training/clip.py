"""The offline CLIP path as a library: fine-tune on a chart dataset, calibrate on validation, measure on test, save a bundle.

`vlmtrader train clip` and the build pipeline's CLIP stage both call train_bundle; with ray_address
set, the fine-tune runs across Ray Train workers (daemon/training/clip_ray.py) and the rest is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from vlm_engine.bundle import DatasetRef, ModelCard, save_bundle
from vlm_engine.calibrate.evaluate import calibrate_and_measure
from vlm_engine.clip import ClipError, ClipSamples, PromptSet, default_prompts
from vlm_engine.clip.data import NO_PATTERN
from vlm_engine.clip.train import TrainConfig, TrainResult, main
from vlm_engine.render import ChartSpec


def train_bundle(
    *,
    splits: dict[str, ClipSamples],
    spec: ChartSpec,
    dataset: DatasetRef,
    cfg: TrainConfig,
    out: Path,
    prompts: PromptSet | None = None,
    checkpoints: Path | None = None,
    device: str = "auto",
    folds: int = 5,
    accelerator: Any = None,
    extra_metrics: dict[str, float] | None = None,
    ray_address: str | None = None,
    ray_workers: int = 1,
    dataset_dir: Path | None = None,
) -> ModelCard:
    """Train, calibrate on validation, measure on test and save the bundle: the whole offline CLIP path.

    Args:
        ray_address: None trains in this process; "local" (a Ray started here), "auto",
            HOST:PORT or ray://HOST:10001 trains across ray_workers Ray Train workers (DDP).
        dataset_dir: where Ray workers read the splits themselves (a path every node sees);
            without it the splits reach them through Ray's object store.
    """
    if splits["train"].image_size != (spec.height, spec.width):
        msg = f"dataset images are {splits['train'].image_size}, the chart spec draws {spec.height}x{spec.width}"
        raise ClipError(msg)
    classes = sorted(set(splits["train"].patterns) - {NO_PATTERN})
    if NO_PATTERN in splits["train"].patterns:
        classes = [NO_PATTERN, *classes]
    prompts = prompts or default_prompts(classes)
    trainer: Callable[..., TrainResult] = partial(main, accelerator=accelerator)
    if ray_address is not None:
        from daemon.training.clip_ray import train_clip_ray  # ray: only when asked for

        trainer = partial(
            train_clip_ray, address=ray_address, workers=ray_workers, dataset_dir=dataset_dir
        )
    result = trainer(
        cfg,
        train=splits["train"],
        val=splits["validation"],
        prompts=prompts,
        checkpoint_dir=checkpoints,
        device=device,
    )
    if accelerator is not None and not accelerator.is_main_process:
        return ModelCard(
            bundle_id="",
            spec_hash=spec.spec_hash(),
            base=cfg.base,
            parameters=0,
            prompts=prompts,
            dataset=dataset,
        )
    calibration, metrics, report, figures = calibrate_and_measure(
        result.parts, prompts, splits["validation"], splits["test"], k_folds=folds, seed=cfg.seed
    )
    metrics = {**metrics, **(extra_metrics or {}), "best_epoch": float(result.best_epoch)}
    return save_bundle(
        out,
        parts=result.parts,
        spec=spec,
        prompts=prompts,
        dataset=dataset,
        base=cfg.base,
        calibration=calibration,
        train_config=msgspec.to_builtins(cfg),
        history=[msgspec.to_builtins(h) for h in result.history],
        metrics=metrics,
        calibration_report=report,
        figures=figures,
    )
