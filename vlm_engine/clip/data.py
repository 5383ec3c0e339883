"""Chart/text samples for CLIP: the prompt set, in-memory samples, and loading a dataset directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from vlm_engine.clip.errors import ClipDataError
from vlm_engine.render import ChartSpec

NO_PATTERN = "none"
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "val", "valid"),
    "test": ("test",),
}


class PromptSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Texts that stand for each pattern class and each direction; zero-shot scores compare images to them."""

    patterns: dict[str, tuple[str, ...]]
    up: tuple[str, ...] = ("price rises over the next bars", "an uptrend follows")
    down: tuple[str, ...] = ("price falls over the next bars", "a downtrend follows")

    def __post_init__(self) -> None:
        if len(self.patterns) < 2:
            msg = "prompts: need at least two pattern classes"
            raise ValueError(msg)
        empty = [
            name
            for name, texts in self.patterns.items()
            if not texts or not all(t.strip() for t in texts)
        ]
        if empty or not self.up or not self.down:
            msg = f"prompts: every class needs at least one non-empty text (empty: {empty or 'up/down'})"
            raise ValueError(msg)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.patterns)


def default_prompts(classes: Sequence[str]) -> PromptSet:
    """Two prompts per pattern class, e.g. 'a candlestick chart ending in a bullish engulfing'."""
    patterns: dict[str, tuple[str, ...]] = {}
    for name in classes:
        words = name.replace("_", " ")
        if name == NO_PATTERN:
            patterns[name] = (
                "a candlestick chart with no pattern on the last bars",
                "no candlestick pattern",
            )
        else:
            patterns[name] = (f"a candlestick chart ending in a {words}", f"{words} pattern")
    return PromptSet(patterns=patterns)


class SampleOrigins(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """Where each sample's chart was cut from: symbol, close time of its last bar (epoch seconds) and
    the fractional close-to-close return over the next `horizon` bars (what the analog index keeps)."""

    symbols: tuple[str, ...]
    ts: npt.NDArray[np.int64]
    forward_return: npt.NDArray[np.float64]
    horizon: int

    def subset(self, idx: npt.NDArray[np.int64]) -> SampleOrigins:
        return SampleOrigins(
            symbols=tuple(self.symbols[i] for i in idx.tolist()),
            ts=self.ts[idx],
            forward_return=self.forward_return[idx],
            horizon=self.horizon,
        )


class ClipSamples:
    """One split: images (N, H, W, 3) uint8, texts and hard negatives per sample, pattern and direction labels.

    direction is +1 (up), -1 (down) or 0 (flat / unknown) for the forward outcome; origins (charts
    cut from bars only) say where each chart comes from and what followed it.
    """

    def __init__(
        self,
        *,
        images: npt.NDArray[np.uint8],
        texts: Sequence[Sequence[str]],
        hard_negatives: Sequence[Sequence[str]],
        patterns: Sequence[str],
        direction: npt.ArrayLike,
        where: str = "samples",
        origins: SampleOrigins | None = None,
    ) -> None:
        n = len(patterns)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            msg = f"{where}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
            raise ClipDataError(msg)
        if n == 0:
            msg = f"{where}: no samples"
            raise ClipDataError(msg)
        if not (images.shape[0] == len(texts) == len(hard_negatives) == n):
            msg = (
                f"{where}: column lengths differ (images {images.shape[0]}, texts {len(texts)}, "
                f"hard negatives {len(hard_negatives)}, patterns {n})"
            )
            raise ClipDataError(msg)
        empty = next(
            (i for i, t in enumerate(texts) if not t or not all(s.strip() for s in t)), None
        )
        if empty is not None:
            msg = f"{where}: sample {empty} has an empty text"
            raise ClipDataError(msg)
        self.images = images
        self.texts = [tuple(t) for t in texts]
        self.hard_negatives = [tuple(t) for t in hard_negatives]
        self.patterns = [str(p) for p in patterns]
        self.direction = np.asarray(direction, dtype=np.int8).reshape(-1)
        if self.direction.shape[0] != n:
            msg = f"{where}: direction has {self.direction.shape[0]} values for {n} samples"
            raise ClipDataError(msg)
        if origins is not None and len(origins.symbols) != n:
            msg = f"{where}: origins has {len(origins.symbols)} rows for {n} samples"
            raise ClipDataError(msg)
        self.origins = origins

    def __len__(self) -> int:
        return len(self.patterns)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, indexes: npt.ArrayLike) -> ClipSamples:
        idx = np.asarray(indexes, dtype=np.int64)
        return ClipSamples(
            images=self.images[idx],
            texts=[self.texts[i] for i in idx.tolist()],
            hard_negatives=[self.hard_negatives[i] for i in idx.tolist()],
            patterns=[self.patterns[i] for i in idx.tolist()],
            direction=self.direction[idx],
            origins=self.origins.subset(idx) if self.origins is not None else None,
        )

    def corpus(self) -> list[str]:
        """Every text in the split (positives and hard negatives), for training a tokenizer."""
        out = [t for ts in self.texts for t in ts]
        out += [t for ts in self.hard_negatives for t in ts]
        return out


class DatasetInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a dataset directory says about itself: its manifest hash and chart spec."""

    path: str
    manifest_hash: str
    spec_hash: str
    spec: dict[str, Any]

    def chart_spec(self) -> ChartSpec:
        """The dataset's ChartSpec (the default spec when the manifest has none), checked against spec_hash."""
        try:
            spec = msgspec.convert(self.spec, ChartSpec) if self.spec else ChartSpec()
        except (msgspec.ValidationError, ValueError) as e:
            msg = f"{self.path}: manifest chart spec is invalid ({e})"
            raise ClipDataError(msg) from None
        if self.spec_hash and spec.spec_hash() != self.spec_hash:
            msg = f"{self.path}: manifest spec hashes to {spec.spec_hash()}, the manifest says {self.spec_hash}"
            raise ClipDataError(msg)
        return spec


def load_dataset_dir(path: Path) -> tuple[dict[str, ClipSamples], DatasetInfo]:
    """Load a chart/text dataset saved by the dataset builder (DatasetDict on disk + manifest.json)."""
    if not path.is_dir():
        msg = f"{path}: no such dataset directory"
        raise ClipDataError(msg)
    manifest_path = path / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        msg = f"{manifest_path}: cannot read the dataset manifest ({e})"
        raise ClipDataError(msg) from None
    from datasets import DatasetDict, load_from_disk  # heavy import, only when loading from disk

    hf_dir = next(
        (d for d in (path / "hf", path / "dataset", path) if (d / "dataset_dict.json").exists()),
        None,
    )
    if hf_dir is None:
        msg = f"{path}: no saved DatasetDict (dataset_dict.json) here or in hf/ or dataset/"
        raise ClipDataError(msg)
    try:
        loaded = load_from_disk(str(hf_dir))
    except (OSError, ValueError) as e:
        msg = f"{hf_dir}: cannot load the dataset ({e})"
        raise ClipDataError(msg) from None
    if not isinstance(loaded, DatasetDict):
        msg = f"{hf_dir}: expected a DatasetDict with train/validation/test splits"
        raise ClipDataError(msg)
    splits: dict[str, ClipSamples] = {}
    for split, aliases in _SPLIT_ALIASES.items():
        name = next((a for a in aliases if a in loaded), None)
        if name is None:
            msg = f"{hf_dir}: missing split {split!r} (has {sorted(loaded)})"
            raise ClipDataError(msg)
        splits[split] = _samples_from_hf(loaded[name], where=f"{hf_dir}[{name}]")
    spec = manifest.get("spec") or {}
    info = DatasetInfo(
        path=str(path),
        manifest_hash=str(
            manifest.get("dataset_hash") or manifest.get("hash") or _file_hash(manifest_path)
        ),
        spec_hash=str(manifest.get("spec_hash", "")),
        spec=spec if isinstance(spec, dict) else {},
    )
    return splits, info


def _column(
    ds: Any, names: Sequence[str], where: str, *, required: bool = True
) -> list[Any] | None:
    for name in names:
        if name in ds.column_names:
            return list(ds[name])
    if required:
        msg = (
            f"{where}: missing column (one of {', '.join(names)}; has {', '.join(ds.column_names)})"
        )
        raise ClipDataError(msg)
    return None


def _samples_from_hf(ds: Any, *, where: str) -> ClipSamples:
    raw_images = _column(ds, ("image", "chart"), where) or []
    try:
        images = np.stack(
            [
                np.asarray(im.convert("RGB") if hasattr(im, "convert") else im, dtype=np.uint8)
                for im in raw_images
            ]
        )
    except (ValueError, OSError, TypeError) as e:
        msg = f"{where}: corrupt or ragged images ({e})"
        raise ClipDataError(msg) from None
    texts_raw = _column(ds, ("texts", "text", "captions", "caption"), where) or []
    texts = [[t] if isinstance(t, str) else list(t) for t in texts_raw]
    negatives_raw = _column(ds, ("hard_negatives", "negatives"), where, required=False)
    negatives = (
        [[t] if isinstance(t, str) else list(t) for t in negatives_raw]
        if negatives_raw
        else [[] for _ in texts]
    )
    patterns_raw = _column(ds, ("pattern", "label", "patterns"), where) or []
    patterns = [_first_pattern(p) for p in patterns_raw]
    direction_raw = _column(ds, ("direction", "direction_label", "outcome"), where, required=False)
    direction = (
        [_direction_value(d) for d in direction_raw] if direction_raw else [0] * len(patterns)
    )
    return ClipSamples(
        images=images,
        texts=texts,
        hard_negatives=negatives,
        patterns=patterns,
        direction=direction,
        where=where,
    )


def _first_pattern(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else NO_PATTERN
    text = str(value) if value is not None else ""
    return text if text else NO_PATTERN


def _direction_value(value: Any) -> int:
    if isinstance(value, str):
        return {"up": 1, "down": -1}.get(value.lower(), 0)
    return int(np.sign(int(value))) if value is not None else 0


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
