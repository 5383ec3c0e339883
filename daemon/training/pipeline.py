"""One build pipeline for any labelled bars: charts -> CLIP fine-tune + calibration -> XGBoost + fusion -> card.

Time split (global cuts over the period, all symbols): CLIP trains, calibrates and is measured
on the first part (its own train / validation / test by time), the tabular stage fits on a
later part CLIP never saw, and the last part is held out: only scored, by models fitted before
it, for the card's figures. The bundle records its bar size, horizon and that period
(`ModelCard.trained_on`).

Resumable: finished stages are kept in the sibling `.DIR.building` directory with a marker
keyed by a hash of config + data, so a rerun of the same build skips them (the CLIP trainer
resumes from its last checkpoint too); the bundle is moved into place only when complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import structlog
from tqdm import tqdm

from daemon.errors import InputError
from daemon.training.analogs import add_analogs
from daemon.training.clip import train_bundle
from daemon.training.config import BootstrapConfig, BuildConfig, default_horizon
from daemon.training.labels import label_counts
from daemon.training.sources import sim_bars, user_bars
from daemon.training.tabular import fit_tabular
from vlm_engine.bundle import (
    BundleError,
    DatasetRef,
    ModelCard,
    TrainedOn,
    add_to_bundle,
    publish_directory,
    read_card,
)
from vlm_engine.clip.data import NO_PATTERN
from vlm_engine.clip.quickset import direction_counts, samples_from_bars
from vlm_engine.clip.train import TrainConfig
from vlm_engine.dataset.bars import frame_bar_seconds, frame_hash, ts_seconds
from vlm_engine.dataset.errors import BarsInputError
from vlm_engine.shards import TaskMap

log = structlog.get_logger("daemon.training")

STAGES = ("clip", "tabular")
MARKER = "stages.json"


class BuildInputError(InputError):
    """The bars cannot make a bundle (too few, one class, bad file): one line naming what and where."""


class TimeSplit(msgspec.Struct, frozen=True, kw_only=True):
    """Epoch-second cuts: CLIP reads bars <= clip_end, the tabular stage fits on label windows
    ending before holdout_start - embargo, the held-out rows start at holdout_start."""

    start: int
    clip_end: int
    holdout_start: int
    end: int


class BuildResult(msgspec.Struct, frozen=True, kw_only=True):
    """The published bundle's card, the wall time and each stage's seconds (0 when resumed)."""

    card: ModelCard
    wall_seconds: float
    stage_seconds: dict[str, float]
    resumed: tuple[str, ...] = ()


class ClipOnRay(msgspec.Struct, frozen=True, kw_only=True):
    """Where the CLIP stage fine-tunes: `workers` Ray Train workers of the cluster at `address`
    ("local", "auto", HOST:PORT or ray://HOST:10001)."""

    address: str
    workers: int = 1


class _Marker(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    done: tuple[str, ...] = ()


def time_split(stamps: np.ndarray, cfg: BuildConfig) -> TimeSplit:
    """Global cuts at the configured fractions of the distinct timestamps."""
    n = stamps.size
    return TimeSplit(
        start=int(stamps[0]),
        clip_end=int(stamps[max(0, int(n * cfg.split.clip_fraction) - 1)]),
        holdout_start=int(stamps[min(n - 1, int(n * (1 - cfg.split.holdout_fraction)))]),
        end=int(stamps[-1]),
    )


def bar_size(frame: pd.DataFrame) -> int:
    """The most common spacing between consecutive bars of a symbol (epoch seconds)."""
    try:
        return frame_bar_seconds(frame)
    except BarsInputError as e:
        raise BuildInputError(str(e)) from None


def build_key(frame: pd.DataFrame, cfg: BuildConfig, source: str) -> str:
    """Hash of config + data: a rerun with this key may reuse the finished stages."""
    digest = hashlib.sha256(msgspec.json.encode(cfg))
    digest.update(source.encode())
    digest.update(frame_hash(frame).encode())
    digest.update("\n".join(frame["pattern"].astype(str).tolist()).encode())
    return digest.hexdigest()[:16]


def build(
    frame: pd.DataFrame,
    cfg: BuildConfig,
    out: Path,
    *,
    source: str,
    progress: bool = False,
    task_map: TaskMap | None = None,
    clip_ray: ClipOnRay | None = None,
) -> BuildResult:
    """Build the full bundle from labelled bars (symbol, ts, OHLCV, pattern) and publish it at `out`.

    task_map runs the tabular stage's walk-forward XGBoost fits (e.g. as Ray tasks); clip_ray
    fine-tunes CLIP across Ray Train workers (one worker: the same bundle as in this process)."""
    import torch

    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    missing = {"symbol", "ts", "open", "high", "low", "close", "volume", "pattern"} - set(
        frame.columns
    )
    if missing:
        msg = f"bars: missing column(s) {', '.join(sorted(missing))}"
        raise BuildInputError(msg)
    frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    bar_seconds = bar_size(frame)
    horizon = cfg.horizon or default_horizon(bar_seconds)
    ts = ts_seconds(frame)
    stamps = np.unique(ts)
    _check_bars(frame, stamps, cfg, horizon)
    cut = time_split(stamps, cfg)
    key = build_key(frame, cfg, source)
    building = out.with_name(f".{out.name}.building")
    bundle = building / "bundle"
    done = resumed = _resume(building, key)
    symbols = tuple(sorted(frame["symbol"].unique().tolist()))
    log.info(
        "build.started",
        out=str(out),
        source=source,
        bars=len(frame),
        symbols=len(symbols),
        bar_seconds=bar_seconds,
        horizon_bars=horizon,
        clip_end=cut.clip_end,
        holdout_start=cut.holdout_start,
        labels=label_counts(frame),
        resumed=list(done),
    )
    seconds = dict.fromkeys(STAGES, 0.0)
    if "clip" not in done:
        t0 = time.perf_counter()
        _clip_stage(
            frame[ts <= cut.clip_end],
            cfg,
            bundle,
            building,
            key,
            source,
            horizon,
            progress,
            clip_ray,
        )
        seconds["clip"] = time.perf_counter() - t0
        done = _mark(building, key, done, "clip")
    if "tabular" not in done:
        t0 = time.perf_counter()
        later = frame[ts > cut.clip_end]
        with _bar(progress, "tabular: CLIP + features", len(later)) as bar:
            fit_tabular(
                later,
                cfg,
                bundle,
                bar_seconds=bar_seconds,
                horizon=horizon,
                holdout_start=cut.holdout_start,
                source=source,
                tick=bar.update,
                task_map=task_map,
            )
        seconds["tabular"] = time.perf_counter() - t0
        done = _mark(building, key, done, "tabular")
    fitted_end = stamps[stamps < cut.holdout_start - cfg.split.embargo_bars * bar_seconds]
    card = add_to_bundle(
        bundle,
        files={},
        trained_on=TrainedOn(
            source=source,
            bar_seconds=bar_seconds,
            horizon_bars=horizon,
            symbols=symbols,
            start=cut.start,
            end=int(fitted_end[-1]) if fitted_end.size else cut.start,
            holdout_start=cut.holdout_start,
        ),
    )
    publish(bundle, out)
    shutil.rmtree(building, ignore_errors=True)
    wall = time.perf_counter() - started
    log.info(
        "build.finished",
        out=str(out),
        bundle_id=card.bundle_id,
        wall_seconds=round(wall, 1),
        **{f"{s}_seconds": round(v, 1) for s, v in seconds.items()},
        resumed=list(resumed),
    )
    return BuildResult(card=card, wall_seconds=wall, stage_seconds=seconds, resumed=resumed)


def _check_bars(frame: pd.DataFrame, stamps: np.ndarray, cfg: BuildConfig, horizon: int) -> None:
    """One-line refusals before any work: too few bars for the three parts, no labels at all."""
    need = cfg.spec.bars_needed + horizon
    rows = cfg.tabular.window + horizon
    tabular = 1.0 - cfg.split.clip_fraction - cfg.split.holdout_fraction
    least = max(
        int(np.ceil(10 * need / cfg.split.clip_fraction)),
        int(np.ceil(3 * rows / tabular)),
        int(np.ceil((rows + 20) / cfg.split.holdout_fraction)),
    )
    if stamps.size < least:
        msg = (
            f"bars: {stamps.size} distinct bar times, this build needs at least {least} "
            f"(charts of {cfg.spec.bars_needed} bars, windows of {cfg.tabular.window}, "
            f"horizon {horizon}, {cfg.split.holdout_fraction:.0%} held out)"
        )
        raise BuildInputError(msg)
    if not (frame["pattern"].astype(str) != "").any():
        msg = (
            "bars: no bar carries a pattern label (the detectors found none): nothing to teach CLIP"
        )
        raise BuildInputError(msg)


def _clip_stage(
    frame: pd.DataFrame,
    cfg: BuildConfig,
    bundle: Path,
    building: Path,
    key: str,
    source: str,
    horizon: int,
    progress: bool,
    clip_ray: ClipOnRay | None = None,
) -> ModelCard:
    """Charts ending on labelled bars + "none" charts -> CLIP fine-tune -> calibration -> analog
    index of the training charts -> ONNX export: a CLIP-only bundle."""
    t0 = time.perf_counter()
    with _bar(progress, "charts", 1) as bar:
        samples = msgspec.structs.replace(cfg.samples, horizon=horizon)
        splits = samples_from_bars(frame, cfg.spec, samples)
        bar.update(1)
    classes = set(splits["train"].patterns)
    if len(classes - {NO_PATTERN}) < 1 or len(classes) < 2:
        msg = f"bars: the training charts have one class only ({', '.join(sorted(classes))}): need more labelled bars"
        raise BuildInputError(msg)
    data_seconds = time.perf_counter() - t0
    log.info(
        "dataset.built",
        source=source,
        data_seconds=round(data_seconds, 2),
        **{f"{name}_samples": len(s) for name, s in splits.items()},
        **{f"train_{k}": v for k, v in direction_counts(splits["train"].direction).items()},
    )
    train = msgspec.structs.replace(_schedule(cfg, len(splits["train"])), progress=progress)
    train_bundle(
        splits=splits,
        spec=cfg.spec,
        dataset=DatasetRef(
            source=source,
            manifest_hash=key,
            counts={name: len(s) for name, s in splits.items()},
        ),
        cfg=train,
        out=bundle,
        checkpoints=building / "checkpoints",
        device="cpu",
        extra_metrics={"data_seconds": data_seconds},
        ray_address=clip_ray.address if clip_ray is not None else None,
        ray_workers=clip_ray.workers if clip_ray is not None else 1,
    )
    add_analogs(bundle, splits["train"], cfg.analogs)
    # The image tower on ONNX Runtime (fp32 + INT8) and the test
    # charts the daemon checks their parity on when it loads the bundle.
    from vlm_engine.infer import ExportRefused
    from vlm_engine.infer.onnx_bundle import export_to_bundle

    try:
        return export_to_bundle(bundle, train=splits["train"], test=splits["test"]).card
    except ExportRefused:  # logged (onnx.refused): the bundle serves CLIP on torch
        return read_card(bundle)


def _schedule(cfg: BuildConfig, charts: int) -> TrainConfig:
    """cfg.train, or with the epochs that make about cfg.train_steps optimizer steps on `charts`
    charts (early stopping no sooner than half of them, patience a quarter: validation accuracy
    on a few hundred charts is noisy in the first epochs)."""
    if not cfg.train_steps:
        return cfg.train
    per_epoch = max(1, -(-charts // cfg.train.batch_size))
    epochs = min(cfg.max_epochs, max(cfg.train.min_epochs, -(-cfg.train_steps // per_epoch)))
    return msgspec.structs.replace(
        cfg.train,
        epochs=epochs,
        min_epochs=max(cfg.train.min_epochs, epochs // 2),
        patience=max(cfg.train.patience, epochs // 4),
    )


def _resume(building: Path, key: str) -> tuple[str, ...]:
    """The stages a previous run of this very build finished; anything else there is wiped."""
    try:
        marker = msgspec.json.decode((building / MARKER).read_bytes(), type=_Marker)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        marker = None
    if marker is not None and marker.key == key:
        try:
            if marker.done:
                read_card(building / "bundle")
            return marker.done
        except BundleError:
            pass
    if building.exists():
        shutil.rmtree(building)
    building.mkdir(parents=True)
    (building / MARKER).write_bytes(msgspec.json.encode(_Marker(key=key)))
    return ()


def _mark(building: Path, key: str, done: tuple[str, ...], stage: str) -> tuple[str, ...]:
    done = (*done, stage)
    tmp = building / f"{MARKER}.tmp"
    tmp.write_bytes(msgspec.json.encode(_Marker(key=key, done=done)))
    os.replace(tmp, building / MARKER)
    log.info("build.stage_finished", stage=stage)
    return done


@contextmanager
def _bar(enabled: bool, desc: str, total: int) -> Iterator[Any]:
    bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=True)
    try:
        yield bar
    finally:
        bar.close()


def publish(building: Path, out: Path) -> None:
    """Move the finished bundle into place (the old one, if any, is replaced in two renames)."""
    try:
        publish_directory(building, out)
    except OSError as e:
        msg = f"{out}: cannot move the built bundle into place ({e})"
        raise BundleError(msg) from None


def bootstrap(
    cfg: BootstrapConfig, out: Path, *, progress: bool = False
) -> tuple[ModelCard, float]:
    """The default bundle: the build fed by the simulated market; returns its card and the wall time in seconds."""
    started = time.perf_counter()
    frame, source = sim_bars(cfg)
    result = build(frame, cfg, out, source=source, progress=progress)
    return result.card, time.perf_counter() - started


def build_from_bars(
    path: Path,
    cfg: BuildConfig,
    out: Path,
    *,
    progress: bool = False,
    task_map: TaskMap | None = None,
    clip_ray: ClipOnRay | None = None,
) -> BuildResult:
    """A bundle from the user's bar files (CSV/Parquet file or directory) labelled by the TA-Lib detectors."""
    try:
        frame, source = user_bars(path, cfg.labels)
    except BarsInputError as e:
        raise BuildInputError(str(e)) from None
    return build(
        frame, cfg, out, source=source, progress=progress, task_map=task_map, clip_ray=clip_ray
    )
