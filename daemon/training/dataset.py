"""`vlmtrader dataset build` as a library: bars (files or the simulated market) -> a versioned chart/text dataset.

The dataset keeps its source bars beside the charts (bars/bars.parquet), so `vlmtrader train xgb
--dataset DIR` reads the same bars; each source is named with its SHA-256 in the manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import pandas as pd

from daemon.training.sources import SIM_START
from strategy.market_sim import SimMarketConfig, simulate_frame
from vlm_engine.bundle.bundle import sha256_file
from vlm_engine.dataset.bars import BAR_COLUMNS, bar_files, load_bars
from vlm_engine.dataset.builder import DatasetConfig, Manifest, SourceInfo, build_dataset
from vlm_engine.render import ChartSpec
from vlm_engine.shards import TaskMap


def load_dataset_config(path: Path | None) -> DatasetConfig:
    """A DatasetConfig from YAML; a file holding only chart spec keys is taken as `spec:`."""
    if path is None:
        return DatasetConfig()
    try:
        data = msgspec.yaml.decode(path.read_bytes()) or {}
    except (OSError, msgspec.DecodeError) as e:
        msg = f"{path}: {e}"
        raise ValueError(msg) from None
    if isinstance(data, dict) and data and set(data) <= set(ChartSpec.__struct_fields__):
        data = {"spec": data}
    try:
        return msgspec.convert(data, type=DatasetConfig)
    except msgspec.ValidationError as e:
        msg = f"{path}: {e}"
        raise ValueError(msg) from None


def file_source(path: Path) -> tuple[pd.DataFrame, list[SourceInfo]]:
    """The bars in a file or directory, and each file named (relative) with its SHA-256."""
    files = bar_files(path)
    root = path if path.is_dir() else path.parent
    sources = [SourceInfo(name=str(f.relative_to(root)), sha256=sha256_file(f)) for f in files]
    return load_bars(path), sources


def sim_source(
    symbols: Sequence[str], *, seed: int, bars: int
) -> tuple[pd.DataFrame, list[SourceInfo]]:
    """`bars` simulated bars per symbol from SIM_START, named by the simulator's settings."""
    config = SimMarketConfig(symbols=tuple(symbols), seed=seed)
    described = msgspec.json.encode({"sim": config, "start": SIM_START.isoformat(), "bars": bars})
    frame = simulate_frame(config, SIM_START, bars)
    return frame, [
        SourceInfo(name=f"sim:{described.decode()}", sha256=hashlib.sha256(described).hexdigest())
    ]


def build_chart_dataset(
    frame: pd.DataFrame,
    sources: list[SourceInfo],
    cfg: DatasetConfig,
    *,
    out: Path,
    progress: bool = True,
    paraphrase: Callable[[str], str] | None = None,
    task_map: TaskMap | None = None,
) -> Manifest:
    """Render, label and split the charts into `out`, with the source bars under out/bars/.

    task_map renders the charts in shards elsewhere (e.g. Ray tasks); the dataset is the same."""
    manifest = build_dataset(
        frame,
        cfg,
        out=out,
        sources=sources,
        progress=progress,
        paraphrase=paraphrase,
        task_map=task_map,
    )
    (out / "bars").mkdir(exist_ok=True)
    frame[list(BAR_COLUMNS)].to_parquet(out / "bars" / "bars.parquet", index=False)
    return manifest
