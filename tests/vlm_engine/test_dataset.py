from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vlm_engine.synth import bars_frame
from vlm_engine.dataset.bars import BarsInputError, normalize_bars, symbol_windows
from vlm_engine.dataset.builder import (
    DatasetConfig,
    SplitConfig,
    ValidationError,
    _validate,
    build_dataset,
    plan_samples,
    read_manifest,
)
from vlm_engine.labels import OutcomeConfig
from vlm_engine.render import ChartSpec, decode_png

SPEC = ChartSpec(window=16, width=64, height=64, sma=(5,), bollinger_period=10)
CFG = DatasetConfig(spec=SPEC, stride=3)


def _windows(symbols=("SIMA", "SIMB", "SIMC"), n=300):
    return symbol_windows(normalize_bars(bars_frame(symbols, n=n)))


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,
        DatasetConfig(spec=SPEC, stride=1, splits=SplitConfig(train=0.5, val=0.25, embargo_bars=7)),
        DatasetConfig(spec=SPEC, stride=5, splits=SplitConfig(holdout_symbols=("SIMC",))),
    ],
)
def test_plan_when_split_by_time_then_no_cover_overlap_across_splits(cfg: DatasetConfig) -> None:
    refs, dropped, embargo = plan_samples(_windows(), cfg)
    by_split = {s: [r for r in refs if r.split == s] for s in ("train", "val", "test", "holdout")}
    assert by_split["train"]
    assert by_split["val"]
    assert by_split["test"]
    assert dropped > 0
    timed = ("train", "val", "test")
    for a, b in combinations(timed, 2):
        # every cover of the earlier split ends before every cover of the later one starts, plus the embargo
        assert max(r.cover_end for r in by_split[a]) + embargo <= min(
            r.cover_start for r in by_split[b]
        )
        gap = min(rb.end_ts for rb in by_split[b]) - max(ra.end_ts for ra in by_split[a])
        assert gap >= cfg.separation_bars * 60
        assert gap >= (cfg.spec.window + cfg.outcome.horizon) * 60
    train_ts = {t for r in by_split["train"] for t in range(r.cover_start, r.cover_end + 1, 60)}
    test_ts = {t for r in by_split["test"] for t in range(r.cover_start, r.cover_end + 1, 60)}
    assert not train_ts & test_ts
    for symbol in cfg.splits.holdout_symbols:
        assert all(r.split == "holdout" for r in refs if r.symbol == symbol)
        assert by_split["holdout"]


def test_build_when_same_inputs_then_same_manifest_and_hash(tmp_path: Path) -> None:
    frame = bars_frame(("SIMA", "SIMB"), n=260)
    a = build_dataset(frame, CFG, out=tmp_path / "a")
    b = build_dataset(frame.sample(frac=1.0, random_state=3), CFG, out=tmp_path / "b")
    assert a.dataset_hash == b.dataset_hash
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (
        tmp_path / "b" / "manifest.json"
    ).read_bytes()
    c = build_dataset(frame, DatasetConfig(spec=SPEC, stride=3, seed=1), out=tmp_path / "c")
    assert c.dataset_hash != a.dataset_hash
    assert c.bars_hash == a.bars_hash


def test_build_when_done_then_hf_and_parquet_match_manifest(tmp_path: Path) -> None:
    from datasets import load_from_disk

    manifest = build_dataset(bars_frame(("SIMA", "SIMB"), n=260), CFG, out=tmp_path)
    assert read_manifest(tmp_path) == manifest
    assert manifest.spec_hash == SPEC.spec_hash()
    assert sum(manifest.directions["train"].values()) == manifest.counts["train"]
    dsd = load_from_disk(str(tmp_path / "hf"))
    for split in ("train", "val", "test"):
        assert len(dsd[split]) == manifest.counts[split]
        assert (
            len(pd.read_parquet(tmp_path / "parquet" / f"{split}.parquet"))
            == manifest.counts[split]
        )
    row = dsd["train"][0]
    assert row["image"].size == (64, 64)
    assert row["text"] == row["texts"][0]
    assert row["direction"] in (-1, 0, 1)
    assert row["pattern"] == (row["patterns"][0] if row["patterns"] else "")
    assert len(row["negatives"]) == len(row["negative_rules"])
    assert not set(row["negatives"]) & set(row["texts"])
    raw = dsd["train"].cast_column("image", dsd["train"].features["image"].__class__(decode=False))[
        0
    ]["image"]
    _, meta = decode_png(raw["bytes"])
    assert meta.symbol == row["symbol"]
    assert meta.last_ts == row["end_ts"]
    facts = json.loads(row["facts"])
    assert facts["ts"] == row["end_ts"]


def test_build_when_bars_too_short_then_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no samples"):
        build_dataset(bars_frame(("SIMA",), n=20), CFG, out=tmp_path)
    assert not (tmp_path / "manifest.json").exists()


def test_validate_when_blank_image_or_empty_text_then_refused() -> None:
    blank = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValidationError, match="empty image"):
        _validate(blank, ["a chart"], "sample X", SPEC)
    ok = blank.copy()
    ok[3, 3] = 255
    with pytest.raises(ValidationError, match="empty label"):
        _validate(ok, ["  "], "sample X", SPEC)
    with pytest.raises(ValidationError, match="corrupt image"):
        _validate(np.zeros((10, 10, 3), dtype=np.uint8), ["x"], "sample X", SPEC)


def test_normalize_bars_when_missing_column_or_duplicate_then_error() -> None:
    frame = bars_frame(("SIMA",), n=30)
    with pytest.raises(BarsInputError, match="missing column"):
        normalize_bars(frame.drop(columns=["volume"]), where="f.csv")
    with pytest.raises(BarsInputError, match="duplicate bar"):
        normalize_bars(pd.concat([frame, frame.iloc[:1]]), where="f.csv")


def test_read_manifest_when_missing_then_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no manifest"):
        read_manifest(tmp_path)


_WINDOWS = _windows(("SIMA", "SIMB"), n=400)


@settings(max_examples=25, deadline=None)
@given(
    train=st.floats(0.2, 0.8),
    val=st.floats(0.05, 0.3),
    stride=st.integers(1, 7),
    embargo=st.integers(0, 30),
    horizon=st.integers(1, 20),
)
def test_plan_when_any_fractions_then_splits_never_share_a_bar(
    train: float, val: float, stride: int, embargo: int, horizon: int
) -> None:
    cfg = DatasetConfig(
        spec=SPEC,
        stride=stride,
        outcome=OutcomeConfig(horizon=horizon),
        splits=SplitConfig(train=train, val=min(val, 1 - train), embargo_bars=embargo),
    )
    refs, _, embargo_s = plan_samples(_WINDOWS, cfg)
    spans = {
        s: [(r.cover_start, r.cover_end) for r in refs if r.split == s]
        for s in ("train", "val", "test")
    }
    order = [s for s in ("train", "val", "test") if spans[s]]
    for a, b in combinations(order, 2):
        assert max(e for _, e in spans[a]) + embargo_s <= min(s for s, _ in spans[b])


def _write_ib_day(root: Path, symbol: str, day: str, frame: pd.DataFrame) -> Path:
    """One symbol-day file as `vlmtrader ib history` writes it: root/SYMBOL/YYYY-MM-DD.parquet."""
    path = root / symbol / f"{day}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def _ib_history_dir(root: Path) -> pd.DataFrame:
    """Two symbols, three days each (the middle one without bars), plus a leftover .tmp file."""
    columns = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    full = bars_frame(("AAPL", "MSFT"), n=400)
    for symbol, bars in full.groupby("symbol"):
        bars = bars.reset_index(drop=True)
        _write_ib_day(root, str(symbol), "2024-03-01", bars.iloc[:200][columns])
        _write_ib_day(root, str(symbol), "2024-03-02", pd.DataFrame([], columns=columns))
        # the boundary bar is in both day files: kept once
        _write_ib_day(root, str(symbol), "2024-03-03", bars.iloc[199:][columns])
    (root / "AAPL" / "2024-03-04.parquet.tmp").write_bytes(b"half-written")
    return normalize_bars(full)


def test_load_bars_when_ib_history_layout_then_all_days_read(tmp_path: Path) -> None:
    from vlm_engine.dataset.bars import bar_files, load_bars

    expected = _ib_history_dir(tmp_path)
    assert len(bar_files(tmp_path)) == 6
    loaded = load_bars(tmp_path)
    assert len(loaded) == len(expected) == 800
    pd.testing.assert_frame_equal(loaded, expected, check_dtype=False)
    manifest = build_dataset(loaded, CFG, out=tmp_path / "out")
    assert manifest.counts["train"] > 0
    assert manifest.counts["test"] > 0
    assert manifest.bars_hash == build_dataset(expected, CFG, out=tmp_path / "again").bars_hash


def test_load_bars_when_every_file_empty_or_conflicting_duplicate_then_error(
    tmp_path: Path,
) -> None:
    from vlm_engine.dataset.bars import load_bars

    columns = ["symbol", "ts", "open", "high", "low", "close", "volume"]
    _write_ib_day(tmp_path / "a", "AAPL", "2024-03-02", pd.DataFrame([], columns=columns))
    with pytest.raises(BarsInputError, match="no bars in any of its 1 file"):
        load_bars(tmp_path / "a")
    bars = bars_frame(("AAPL",), n=20)[columns]
    _write_ib_day(tmp_path / "b", "AAPL", "2024-03-01", bars.iloc[:10])
    changed = bars.iloc[9:].copy()
    changed.loc[changed.index[0], "close"] += 0.5
    changed.loc[changed.index[0], "high"] += 0.5
    _write_ib_day(tmp_path / "b", "AAPL", "2024-03-02", changed)
    with pytest.raises(BarsInputError, match="duplicate bar for AAPL"):
        load_bars(tmp_path / "b")
