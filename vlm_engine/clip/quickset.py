"""Chart/text samples from bars with known (planted) patterns: the bootstrap's and the tests' dataset.

Rule, per symbol: every labelled bar (a planted pattern, or a detector's label) is the last
bar of one chart (at most `max_per_class` per class and symbol in training, validation and test
in proportion to their time, evenly spread in time when capped); "none" charts end on bars with no label in the last `clear_bars` bars, as many as
the mean count of a pattern class. The direction label is the sign of the forward return
over `horizon` bars with a dead band. Splits are by time, with cuts shared by every symbol
(quantiles of the frame's timestamps: train / validation / test) and an embargo of
bars_needed + horizon bars between them, so no chart or its future crosses a split.
Hard negatives are the texts of the mirror pattern (bullish <-> bearish form) or, for
"none", of a random pattern.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd

from vlm_engine.clip.data import NO_PATTERN, ClipSamples, SampleOrigins
from vlm_engine.clip.errors import ClipDataError
from vlm_engine.render import ChartSpec, ChartWindow, make_renderer

MIRROR = {
    "bullish_engulfing": "bearish_engulfing",
    "hammer": "shooting_star",
    "morning_star": "evening_star",
    "three_white_soldiers": "three_black_crows",
    "double_bottom": "double_top",
}
MIRROR.update({v: k for k, v in list(MIRROR.items())})

_TEMPLATES = (
    "{p} on the last bar",
    "a chart ending in a {p}",
    "{p} after a {t}",
    "the last candles form a {p}",
)
_NONE_TEMPLATES = (
    "no clear pattern on the last bars",
    "ordinary candles after a {t}",
    "no candlestick pattern",
)


class QuicksetConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How charts are cut from bars; fractions split the time range."""

    horizon: Annotated[int, msgspec.Meta(gt=0)] = 5
    dead_band_bps: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    clear_bars: Annotated[int, msgspec.Meta(ge=1)] = 4
    val_fraction: Annotated[float, msgspec.Meta(gt=0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, msgspec.Meta(gt=0, lt=0.5)] = 0.15
    none_ratio: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    max_per_class: Annotated[int, msgspec.Meta(ge=0)] = 0  # per symbol, in train; 0 = all
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0


def samples_from_bars(
    frame: pd.DataFrame, spec: ChartSpec, cfg: QuicksetConfig
) -> dict[str, ClipSamples]:
    """Train/validation/test samples from a long bar frame with a `pattern` column ("" = none)."""
    missing = {"symbol", "ts", "open", "high", "low", "close", "volume", "pattern"} - set(
        frame.columns
    )
    if missing:
        msg = f"bars: missing column(s) {', '.join(sorted(missing))}"
        raise ClipDataError(msg)
    rng = np.random.default_rng(cfg.seed)
    renderer = make_renderer(spec)
    need = spec.bars_needed
    embargo = need + cfg.horizon
    stamps = np.unique(_epoch_seconds(frame["ts"]))
    spacing = int(np.median(np.diff(stamps))) if stamps.size > 1 else 1  # a one-bar symbol's
    val_cut = stamps[int(stamps.size * (1 - cfg.test_fraction - cfg.val_fraction))]
    test_cut = stamps[min(stamps.size - 1, int(stamps.size * (1 - cfg.test_fraction)))]
    # validation and test capped in proportion to their share of the time (train gets max_per_class)
    train_fraction = 1.0 - cfg.val_fraction - cfg.test_fraction
    caps = {
        "train": cfg.max_per_class,
        "validation": math.ceil(cfg.max_per_class * cfg.val_fraction / train_fraction),
        "test": math.ceil(cfg.max_per_class * cfg.test_fraction / train_fraction),
    }
    picks: dict[str, list[tuple[ChartWindow, str, int, float]]] = {
        "train": [],
        "validation": [],
        "test": [],
    }
    for symbol, bars in frame.sort_values(["symbol", "ts"], kind="stable").groupby(
        "symbol", sort=True
    ):
        n = len(bars)
        ts = _epoch_seconds(bars["ts"])
        ohlcv = {
            c: bars[c].to_numpy(dtype=np.float64)
            for c in ("open", "high", "low", "close", "volume")
        }
        pattern = bars["pattern"].fillna("").astype(str).to_numpy()
        bar_seconds = int(np.median(np.diff(ts))) if n > 1 else spacing
        test_start = int(np.searchsorted(ts, test_cut))
        val_start = int(np.searchsorted(ts, val_cut))
        ranges = {
            "train": (need - 1, val_start - embargo),
            "validation": (val_start, test_start - embargo),
            "test": (test_start, n - cfg.horizon - 1),
        }
        recent = np.convolve(
            (pattern != "").astype(np.int64), np.ones(cfg.clear_bars, dtype=np.int64)
        )[:n]
        for split, (lo, hi) in ranges.items():
            if hi <= lo:
                continue
            idx = np.arange(lo, hi + 1)
            planted = _capped(idx[pattern[idx] != ""], pattern, caps[split])
            free = idx[recent[idx] == 0]
            classes = max(1, len(set(pattern[planted].tolist())))
            n_none = min(free.size, round(cfg.none_ratio * planted.size / classes))
            chosen_none = (
                np.sort(rng.choice(free, size=n_none, replace=False)) if n_none else free[:0]
            )
            for i in np.concatenate([planted, chosen_none]).tolist():
                start = i + 1 - need
                window = ChartWindow(
                    symbol=str(symbol),
                    bar_seconds=bar_seconds,
                    timestamps=ts[start : i + 1],
                    **{c: v[start : i + 1] for c, v in ohlcv.items()},
                )
                forward = ohlcv["close"][i + cfg.horizon] / ohlcv["close"][i] - 1.0
                ret_bps = forward * 1e4
                direction = 0 if abs(ret_bps) <= cfg.dead_band_bps else int(np.sign(ret_bps))
                picks[split].append((window, pattern[i] or NO_PATTERN, direction, forward))
    out: dict[str, ClipSamples] = {}
    for split, rows in picks.items():
        if not rows:
            msg = f"bars: no {split} charts (need more bars than {need} per split plus an embargo of {embargo})"
            raise ClipDataError(msg)
        images = renderer.render_batch([w for w, _, _, _ in rows])
        texts = [_texts(w, p, rng) for w, p, _, _ in rows]
        negatives = [_negatives(w, p, rng, sorted(MIRROR)) for w, p, _, _ in rows]
        out[split] = ClipSamples(
            images=images,
            texts=texts,
            hard_negatives=negatives,
            patterns=[p for _, p, _, _ in rows],
            direction=[d for _, _, d, _ in rows],
            where=f"quickset[{split}]",
            origins=SampleOrigins(
                symbols=tuple(w.symbol for w, _, _, _ in rows),
                ts=np.array([int(w.timestamps[-1]) for w, _, _, _ in rows], dtype=np.int64),
                forward_return=np.array([f for _, _, _, f in rows], dtype=np.float64),
                horizon=cfg.horizon,
            ),
        )
    return out


def _capped(
    index: npt.NDArray[np.int64], pattern: npt.NDArray[np.object_], cap: int
) -> npt.NDArray[np.int64]:
    """At most `cap` indexes per pattern class, evenly spaced in time (all when cap is 0)."""
    if not cap:
        return index
    kept = []
    for name in sorted(set(pattern[index].tolist())):
        mine = index[pattern[index] == name]
        if mine.size > cap:
            mine = mine[np.linspace(0, mine.size - 1, cap).round().astype(np.int64)]
        kept.append(mine)
    return np.sort(np.concatenate(kept)) if kept else index


def _epoch_seconds(column: pd.Series) -> npt.NDArray[np.int64]:
    if pd.api.types.is_datetime64_any_dtype(column):
        stamps = pd.to_datetime(column, utc=True).dt.tz_localize(None)
        return stamps.to_numpy().astype("datetime64[s]").astype(np.int64)  # type: ignore[no-any-return]
    return column.to_numpy(dtype=np.int64)  # type: ignore[no-any-return]


def _trend(window: ChartWindow) -> str:
    close = window.close[-20:]
    change = close[-1] / close[0] - 1.0
    if change > 0.002:
        return "rally"
    if change < -0.002:
        return "decline"
    return "sideways stretch"


def _texts(window: ChartWindow, pattern: str, rng: np.random.Generator) -> tuple[str, ...]:
    trend = _trend(window)
    if pattern == NO_PATTERN:
        return tuple(t.format(t=trend) for t in _NONE_TEMPLATES)
    words = pattern.replace("_", " ")
    chosen = rng.permutation(len(_TEMPLATES))[:3].tolist()
    return tuple(_TEMPLATES[k].format(p=words, t=trend) for k in chosen)


def _negatives(
    window: ChartWindow, pattern: str, rng: np.random.Generator, names: Sequence[str]
) -> tuple[str, ...]:
    wrong = MIRROR.get(pattern) if pattern != NO_PATTERN else None
    if wrong is None:
        wrong = str(names[int(rng.integers(len(names)))]) if names else "hammer"
    return _texts(window, wrong, rng)[:2]


def class_names(samples: dict[str, ClipSamples]) -> list[str]:
    """Sorted pattern classes seen in training, 'none' first."""
    names = sorted(set(samples["train"].patterns) - {NO_PATTERN})
    return [NO_PATTERN, *names] if NO_PATTERN in samples["train"].patterns else names


def direction_counts(direction: npt.NDArray[np.int8]) -> dict[str, int]:
    return {
        "up": int((direction > 0).sum()),
        "flat": int((direction == 0).sum()),
        "down": int((direction < 0).sum()),
    }
