"""`vlmtrader model export-onnx` as a library: the ONNX export added to a bundle built before the
build made one (or rewritten: a bundle whose INT8 is the old dynamic one gets static INT8),
checked for parity on the bundle's own CLIP test split, INT8 calibrated on its training split.

The splits are not stored in a bundle; they are rebuilt from the build's source (the simulated
market, or the user's bars) and config exactly as the build drew it, and accepted only when the
data and config hash to the card's manifest hash (the build's key): parity is measured on the
charts the bundle was tested on, or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
from tqdm import tqdm

from daemon.training.config import (
    BootstrapConfig,
    BuildConfig,
    default_horizon,
    previous_bootstrap_configs,
    quick_build_config,
    quick_config,
)
from daemon.training.pipeline import BuildInputError, bar_size, build_key, time_split
from daemon.training.sources import sim_bars, user_bars
from vlm_engine.bundle import ModelCard, read_card
from vlm_engine.clip.data import ClipSamples
from vlm_engine.clip.quickset import samples_from_bars
from vlm_engine.dataset.bars import ts_seconds
from vlm_engine.dataset.errors import BarsInputError
from vlm_engine.infer.onnx_bundle import STEPS, OnnxExport, export_to_bundle

SIM, BARS = "sim:", "bars:"


def candidate_configs(source: str, config: BuildConfig | None) -> list[BuildConfig]:
    """The build configs a bundle from `source` may have been built with: the given one, else the
    default and the quick one of its kind (bootstrap for the simulated market, build for bars), and
    for the simulated market the earlier defaults (96 px until 2026-12-03, 128 px until 2026-12-02)."""
    if config is not None:
        return [config]
    if source.startswith(SIM):
        return [BootstrapConfig(), *previous_bootstrap_configs(), quick_config()]
    return [BuildConfig(), quick_build_config()]


def _labelled_bars(source: str, cfg: BuildConfig, bars: Path | None) -> pd.DataFrame | None:
    """The build's labelled frame for cfg (None when cfg cannot have drawn from `source`)."""
    if source.startswith(SIM):
        if not isinstance(cfg, BootstrapConfig):
            return None
        frame, drawn = sim_bars(cfg)
        return frame if drawn == source else None
    path = bars or Path(source.removeprefix(BARS))
    try:
        frame, _ = user_bars(path, cfg.labels)
    except BarsInputError as e:
        msg = f"{path}: {' '.join(str(e).split())} (give the bars the bundle was built from with --bars)"
        raise BuildInputError(msg) from None
    return frame


def rebuild_splits(
    card: ModelCard, *, where: Path, configs: Sequence[BuildConfig], bars: Path | None = None
) -> dict[str, ClipSamples]:
    """The CLIP splits (train, validation, test) of the build that made `card`, from the first config (with `bars` for a
    bundle of user bars) whose data and config hash to the card's manifest hash; BuildInputError,
    one line, when none does."""
    source = card.dataset.source
    if not source.startswith((SIM, BARS)):
        msg = f"{where}: built from {source!r}, not by `vlmtrader model build`/`bootstrap`: its test split cannot be rebuilt"
        raise BuildInputError(msg)
    for cfg in configs:
        frame = _labelled_bars(source, cfg, bars)
        if frame is None:
            continue
        frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
        if build_key(frame, cfg, source) != card.dataset.manifest_hash:
            continue
        horizon = cfg.horizon or default_horizon(bar_size(frame))
        ts = ts_seconds(frame)
        cut = time_split(np.unique(ts), cfg)
        samples = msgspec.structs.replace(cfg.samples, horizon=horizon)
        return samples_from_bars(frame[ts <= cut.clip_end], cfg.spec, samples)
    what = "--config" if source.startswith(SIM) else "--bars and --config"
    msg = (
        f"{where}: cannot rebuild its test split: no config tried reproduces the build "
        f"(source {source}, manifest {card.dataset.manifest_hash}); give the {what} it was built with"
    )
    raise BuildInputError(msg)


def export_onnx(
    bundle: Path,
    *,
    int8: bool = True,
    config: BuildConfig | None = None,
    bars: Path | None = None,
    progress: bool = False,
) -> OnnxExport:
    """Add the ONNX export (fp32, INT8 unless int8 is False) to a bundle, parity checked on its test
    split and INT8 calibrated on its training split (see vlm_engine.infer.onnx_bundle);
    BuildInputError when the splits cannot be rebuilt,
    ExportRefused when fp32 fails its parity check."""
    card = read_card(bundle)
    with tqdm(total=len(STEPS) + 1, desc="export-onnx", disable=not progress) as bar:
        bar.set_postfix_str("splits")
        configs = candidate_configs(card.dataset.source, config)
        splits = rebuild_splits(card, where=bundle, configs=configs, bars=bars)
        bar.update(1)

        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        result = export_to_bundle(
            bundle, train=splits["train"], test=splits["test"], int8=int8, step=step
        )
        bar.update(bar.total - bar.n)
    return result
