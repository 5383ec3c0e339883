"""Build a versioned, leak-free chart/text dataset from a bars frame.

Samples are chart windows ending every `stride` bars. Each sample covers the bars its chart
reads (window + indicator warm-up) and the bars its label reads (the forward horizon).
Splits are by time: cut times T1 < T2 are the train / train+val quantiles of sample end
times. A sample belongs to a split only if its whole cover lies inside it: train covers end
before T1, val covers start at or after T1 + embargo and end before T2, test covers start at
or after T2 + embargo. So the end times of two samples in different splits are always at
least window + warm-up + horizon (+ embargo_bars) bars apart, and no chart or its future
overlaps another split. Samples that straddle a cut are dropped (`embargoed` in the
manifest). Held-out symbols go whole to a `holdout` split.

Over 400 lines: one build read top to bottom (plan, render and label, manifest, write); the
steps share DatasetConfig and the row layout, and the manifest hashes what they produced.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
import pandas as pd
import structlog

from vlm_engine.dataset.bars import frame_hash, normalize_bars, symbol_windows
from vlm_engine.dataset.errors import ValidationError
from vlm_engine.dataset.render_shards import check_image, rendered_charts
from vlm_engine.labels import (
    DIRECTIONS,
    LABEL_VERSION,
    FactsConfig,
    OutcomeConfig,
    ParaphraseConfig,
    TextConfig,
    TextGenerator,
    chart_facts,
    direction_index,
)
from vlm_engine.render import RENDER_VERSION, ChartSpec, ChartWindow
from vlm_engine.shards import TaskMap

log = structlog.get_logger("vlm_engine.dataset")

DATASET_FORMAT: Final = "vlmtrader-chart-text/1"
SPLITS: Final = ("train", "val", "test", "holdout")
Split = Literal["train", "val", "test", "holdout"]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class SplitConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Time fractions of train and val (test gets the rest); embargo_bars: extra bars between splits."""

    train: Fraction = 0.7
    val: Fraction = 0.15
    embargo_bars: Annotated[int, msgspec.Meta(ge=0)] = 0
    holdout_symbols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.train + self.val > 1.0:
            msg = f"splits: train ({self.train}) + val ({self.val}) must be <= 1"
            raise ValueError(msg)


class DatasetConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything that decides a dataset's content; `seed` drives the text generator."""

    version: str = "v1"
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0
    stride: Annotated[int, msgspec.Meta(ge=1)] = 4
    spec: ChartSpec = msgspec.field(default_factory=ChartSpec)
    outcome: OutcomeConfig = msgspec.field(default_factory=OutcomeConfig)
    text: TextConfig = msgspec.field(default_factory=TextConfig)
    facts: FactsConfig = msgspec.field(default_factory=FactsConfig)
    splits: SplitConfig = msgspec.field(default_factory=SplitConfig)
    paraphrase: ParaphraseConfig | None = None
    png_compress_level: Annotated[int, msgspec.Meta(ge=0, le=9)] = 1
    formats: tuple[Literal["hf", "parquet"], ...] = ("hf", "parquet")

    @property
    def separation_bars(self) -> int:
        """Minimum distance in bars between the end times of samples in different splits."""
        return self.spec.bars_needed + self.outcome.horizon + self.splits.embargo_bars


class SampleRef(msgspec.Struct, frozen=True, kw_only=True):
    """One planned sample: the chart ends at bar `end` of `symbol`; cover = [cover_start, cover_end]."""

    symbol: str
    end: int
    end_ts: int
    cover_start: int
    cover_end: int
    split: str


class SourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Where bars came from: a file name (no directory) or a generator description, and its sha256."""

    name: str
    sha256: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a dataset holds and how it was made; dataset_hash depends only on content and config."""

    format: str
    version: str
    dataset_hash: str
    split_hashes: dict[str, str]
    spec_hash: str
    spec: dict[str, Any]
    renderer: str
    render_version: str
    label_version: str
    seed: int
    config: dict[str, Any]
    bars_hash: str
    sources: list[SourceInfo]
    counts: dict[str, int]
    embargoed: int
    embargo_seconds: int
    split_times: dict[str, list[int]]
    patterns: dict[str, dict[str, int]]
    directions: dict[str, dict[str, int]]
    mean_confidence: dict[str, float]


def plan_samples(
    windows: dict[str, ChartWindow], cfg: DatasetConfig
) -> tuple[list[SampleRef], int, int]:
    """Samples with their split, the number dropped by the embargo, and the embargo in seconds."""
    need, horizon = cfg.spec.bars_needed, cfg.outcome.horizon
    raw: list[tuple[str, int, int, int, int]] = []
    bar_seconds = max((w.bar_seconds for w in windows.values()), default=60)
    for symbol, w in sorted(windows.items()):
        for end in range(need - 1, len(w) - horizon, cfg.stride):
            raw.append(
                (
                    symbol,
                    end,
                    int(w.timestamps[end]),
                    int(w.timestamps[end - need + 1]),
                    int(w.timestamps[end + horizon]),
                )
            )
    embargo = cfg.splits.embargo_bars * bar_seconds
    timed = [r for r in raw if r[0] not in cfg.splits.holdout_symbols]
    refs: list[SampleRef] = []
    dropped = 0
    t1 = t2 = 0
    if timed:
        ends = np.array([r[2] for r in timed], dtype=np.int64)
        t1 = int(np.quantile(ends, cfg.splits.train, method="lower"))
        t2 = int(np.quantile(ends, min(cfg.splits.train + cfg.splits.val, 1.0), method="lower"))
        if cfg.splits.train + cfg.splits.val >= 1.0:
            t2 = int(ends.max()) + 1
    for symbol, end, end_ts, start, stop in raw:
        split: str | None
        if symbol in cfg.splits.holdout_symbols:
            split = "holdout"
        elif stop < t1:
            split = "train"
        elif start >= t1 + embargo and stop < t2:
            split = "val"
        elif start >= t2 + embargo:
            split = "test"
        else:
            split = None
        if split is None:
            dropped += 1
            continue
        refs.append(
            SampleRef(
                symbol=symbol,
                end=end,
                end_ts=end_ts,
                cover_start=start,
                cover_end=stop,
                split=split,
            )
        )
    return refs, dropped, embargo


def _features() -> Any:
    from datasets import Features, Image, List, Value

    return Features(
        {
            "image": Image(),
            "text": Value("string"),
            "texts": List(Value("string")),
            "confidences": List(Value("float32")),
            "negatives": List(Value("string")),
            "negative_rules": List(Value("string")),
            "pattern": Value("string"),
            "patterns": List(Value("string")),
            "symbol": Value("string"),
            "end_ts": Value("int64"),
            "forward_return": Value("float64"),
            "direction": Value("int8"),
            "outcome_text": Value("string"),
            "facts": Value("string"),
        }
    )


def _validate(image: np.ndarray, texts: Sequence[str], where: str, spec: ChartSpec) -> None:
    check_image(image, where, spec)
    _check_texts(texts, where)


def _check_texts(texts: Sequence[str], where: str) -> None:
    if not texts or any(not t.strip() for t in texts):
        msg = f"{where}: empty label text"
        raise ValidationError(msg)


def build_samples(
    windows: dict[str, ChartWindow],
    refs: Sequence[SampleRef],
    cfg: DatasetConfig,
    *,
    progress: bool = False,
    paraphrase: Callable[[str], str] | None = None,
    task_map: TaskMap | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Render, label and validate every planned sample; rows grouped by split in plan order.

    The charts come from render_shards (here, or spread by task_map); the texts are made here,
    by one seeded generator walked in plan order, so the rows are the same either way."""
    from tqdm import tqdm

    gen = TextGenerator(
        config=msgspec.structs.replace(cfg.text, seed=cfg.seed), paraphrase=paraphrase
    )
    need, horizon = cfg.spec.bars_needed, cfg.outcome.horizon
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    charts = rendered_charts(
        refs, windows, cfg.spec, compress_level=cfg.png_compress_level, task_map=task_map
    )
    for ref, chart in zip(
        tqdm(refs, desc="samples", unit="chart", disable=not progress, mininterval=0.5),
        charts,
        strict=True,
    ):
        w = windows[ref.symbol]
        window = w.slice(ref.end - need + 1, ref.end + 1)
        facts = chart_facts(window, config=cfg.facts)
        labels = gen.describe(facts)
        negatives = gen.negatives(facts)
        ret = float(w.close[ref.end + horizon] / w.close[ref.end] - 1.0)
        direction = direction_index(ret, cfg.outcome.dead_band) - 1  # -1 down, 0 flat, +1 up
        outcome = gen.outcome(facts, DIRECTIONS[direction + 1], horizon)
        _check_texts([label.text for label in labels], f"sample {ref.symbol}@{ref.end_ts}")
        rows[ref.split].append(
            {
                "image": {"bytes": chart.png, "path": None},
                "pixels_sha256": chart.pixels_sha256,
                "text": labels[0].text,
                "texts": [label.text for label in labels],
                "confidences": [label.confidence for label in labels],
                "negatives": [label.text for label in negatives],
                "negative_rules": [label.rule for label in negatives],
                "pattern": facts.pattern_names[0] if facts.patterns else "",
                "patterns": list(facts.pattern_names),
                "symbol": ref.symbol,
                "end_ts": ref.end_ts,
                "forward_return": ret,
                "direction": direction,
                "outcome_text": outcome.text,
                "facts": msgspec.json.encode(facts).decode(),
            }
        )
    return rows


def _split_hash(rows: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        fields = {k: v for k, v in row.items() if k != "image"}
        digest.update(msgspec.json.encode(fields))
    return digest.hexdigest()


def build_dataset(
    frame: pd.DataFrame,
    cfg: DatasetConfig,
    *,
    out: Path,
    sources: Sequence[SourceInfo] = (),
    progress: bool = False,
    paraphrase: Callable[[str], str] | None = None,
    task_map: TaskMap | None = None,
) -> Manifest:
    """Build, validate and write the dataset under `out` (hf/, parquet/, manifest.json).

    task_map spreads the chart rendering (render_shards.render_shard); the dataset is the same."""
    bars = normalize_bars(frame)
    windows = symbol_windows(bars)
    refs, dropped, embargo = plan_samples(windows, cfg)
    if not refs:
        need = cfg.spec.bars_needed + cfg.outcome.horizon
        msg = f"no samples: every symbol needs more than {need} bars (window + warm-up + horizon)"
        raise ValidationError(msg)
    rows = build_samples(
        windows, refs, cfg, progress=progress, paraphrase=paraphrase, task_map=task_map
    )
    manifest = _manifest(cfg, bars, sources, refs, rows, dropped, embargo)
    _write(out, cfg, rows, manifest, progress=progress)
    log.info(
        "dataset.built",
        out=str(out),
        dataset_hash=manifest.dataset_hash,
        spec_hash=manifest.spec_hash,
        embargoed=dropped,
        **{f"{s}_samples": n for s, n in manifest.counts.items()},
    )
    return manifest


def _manifest(
    cfg: DatasetConfig,
    bars: pd.DataFrame,
    sources: Sequence[SourceInfo],
    refs: Sequence[SampleRef],
    rows: dict[str, list[dict[str, Any]]],
    dropped: int,
    embargo: int,
) -> Manifest:
    split_hashes = {s: _split_hash(rows[s]) for s in SPLITS}
    config = msgspec.json.decode(msgspec.json.encode(cfg))
    bars_hash = frame_hash(bars)
    top = hashlib.sha256(
        json.dumps(
            {
                "format": DATASET_FORMAT,
                "config": config,
                "splits": split_hashes,
                "label_version": LABEL_VERSION,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    times: dict[str, list[int]] = {}
    for s in SPLITS:
        covers = [(r.cover_start, r.cover_end) for r in refs if r.split == s]
        if covers:
            times[s] = [min(c[0] for c in covers), max(c[1] for c in covers)]
    return Manifest(
        format=DATASET_FORMAT,
        version=cfg.version,
        dataset_hash=top[:32],
        split_hashes=split_hashes,
        spec_hash=cfg.spec.spec_hash(),
        spec=config["spec"],
        renderer=cfg.spec.renderer,
        render_version=RENDER_VERSION,
        label_version=LABEL_VERSION,
        seed=cfg.seed,
        config=config,
        bars_hash=bars_hash,
        sources=list(sources),
        counts={s: len(rows[s]) for s in SPLITS},
        embargoed=dropped,
        embargo_seconds=embargo,
        split_times=times,
        patterns={
            s: dict(
                sorted(Counter(p for row in rows[s] for p in (row["patterns"] or ["none"])).items())
            )
            for s in SPLITS
        },
        directions={
            s: {
                d: sum(1 for row in rows[s] if DIRECTIONS[row["direction"] + 1] == d)
                for d in DIRECTIONS
            }
            for s in SPLITS
        },
        mean_confidence={
            s: round(float(np.mean([row["confidences"][0] for row in rows[s]])), 4)
            if rows[s]
            else 0.0
            for s in SPLITS
        },
    )


def _write(
    out: Path,
    cfg: DatasetConfig,
    rows: dict[str, list[dict[str, Any]]],
    manifest: Manifest,
    *,
    progress: bool,
) -> None:
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        _write_files(out, cfg, rows, manifest)
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _write_files(
    out: Path, cfg: DatasetConfig, rows: dict[str, list[dict[str, Any]]], manifest: Manifest
) -> None:
    from datasets import Dataset, DatasetDict

    out.mkdir(parents=True, exist_ok=True)
    features = _features()
    names = list(features)
    present = [s for s in SPLITS if rows[s] or s != "holdout"]
    dsd = DatasetDict(
        {
            s: Dataset.from_dict({k: [row[k] for row in rows[s]] for k in names}, features=features)
            for s in present
        }
    )
    if "hf" in cfg.formats:
        dsd.save_to_disk(str(out / "hf"))
    if "parquet" in cfg.formats:
        (out / "parquet").mkdir(exist_ok=True)
        for s, ds in dsd.items():
            ds.to_parquet(str(out / "parquet" / f"{s}.parquet"))
    (out / "manifest.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"
    )


def read_manifest(directory: Path) -> Manifest:
    """The manifest of a built dataset; ValueError names the file when it is missing or bad."""
    path = directory / "manifest.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=Manifest)
    except FileNotFoundError:
        msg = f"{path}: no manifest (not a built dataset directory?)"
        raise ValueError(msg) from None
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        msg = f"{path}: bad manifest ({e})"
        raise ValueError(msg) from None
