"""The analog index format on its own: build, load, nearest, chart PNGs and refusals (no model)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm_engine.bundle import BundleError
from vlm_engine.clip.analogs import (
    ANALOG_DIR,
    CHARTS_FILE,
    EMBEDDINGS_FILE,
    INDEX_FILE,
    AnalogIndex,
    AnalogIndexError,
    UnknownAnalogRow,
    build_analog_index,
    sample_rows,
)

T0 = 1_700_000_000


def _write(tmp_path: Path, n: int = 12, dim: int = 8) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    images = rng.integers(0, 255, size=(n, 16, 16, 3), dtype=np.uint8)
    files = build_analog_index(
        embeddings=vectors,
        images=images,
        symbols=[f"S{i % 3}" for i in range(n)],
        ts=T0 + 60 * np.arange(n),
        forward_return=np.linspace(-0.01, 0.01, n),
        patterns=[("hammer",) if i % 2 else () for i in range(n)],
        horizon_bars=5,
        spec_hash="abc",
    )
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path, vectors, images


def test_load_when_index_written_then_rows_round_trip(tmp_path: Path) -> None:
    bundle, vectors, images = _write(tmp_path)
    index = AnalogIndex.load(bundle)
    assert len(index) == 12
    assert index.horizon_bars == 5
    hits = index.nearest(vectors[7] * 3.0, k=3)  # any length: queries are normalised
    assert [len(h) for h in hits] == [3]
    first = hits[0][0]
    assert first.row == 7
    assert first.similarity == pytest.approx(1.0, abs=1e-3)
    assert first.symbol == "S1"
    assert first.ts == datetime.fromtimestamp(T0 + 420, tz=UTC)
    assert first.patterns == ("hammer",)
    assert first.forward_return == pytest.approx(np.linspace(-0.01, 0.01, 12)[7])
    assert hits[0][0].similarity >= hits[0][1].similarity >= hits[0][2].similarity
    png = Image.open(io.BytesIO(index.chart_png(7)))
    assert np.array_equal(np.asarray(png.convert("RGB")), images[7])


def test_nearest_when_every_row_queried_then_each_finds_itself_first(tmp_path: Path) -> None:
    bundle, vectors, _ = _write(tmp_path)
    index = AnalogIndex.load(bundle / ANALOG_DIR)
    hits = index.nearest(vectors, k=100)
    assert [h[0].row for h in hits] == list(range(12))
    assert all(len(h) == 12 for h in hits)  # k is capped at the rows held


def test_chart_png_when_row_outside_then_named_error(tmp_path: Path) -> None:
    index = AnalogIndex.load(_write(tmp_path)[0])
    for row in (-1, 12, 10**9):
        with pytest.raises(UnknownAnalogRow, match=f"analog row {row} is outside"):
            index.chart_png(row)
    with pytest.raises(AnalogIndexError, match="must be an integer"):
        index.chart_png("3")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "damage", "words"),
    [
        (INDEX_FILE, b"{not json", "unreadable analog index"),
        (EMBEDDINGS_FILE, b"garbage", "unreadable analog embeddings"),
        (CHARTS_FILE, b"short", "chart offsets do not cover"),
    ],
)
def test_load_when_file_damaged_then_one_line_bundle_error(
    tmp_path: Path, name: str, damage: bytes, words: str
) -> None:
    bundle = _write(tmp_path)[0]
    (bundle / name).write_bytes(damage)
    with pytest.raises(BundleError, match=words) as caught:
        AnalogIndex.load(bundle)
    assert "\n" not in str(caught.value)


def test_load_when_embeddings_hold_nan_then_refused(tmp_path: Path) -> None:
    bundle = _write(tmp_path)[0]
    bad = np.full((12, 8), np.nan, dtype=np.float16)
    with (bundle / EMBEDDINGS_FILE).open("wb") as f:
        np.save(f, bad)
    with pytest.raises(AnalogIndexError, match="NaN"):
        AnalogIndex.load(bundle)


def test_sample_rows_when_over_cap_then_seeded_sorted_subset() -> None:
    rows = sample_rows(1_000, 50, seed=3)
    assert rows.size == 50
    assert np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, sample_rows(1_000, 50, seed=3))
    assert not np.array_equal(rows, sample_rows(1_000, 50, seed=4))
    assert np.array_equal(sample_rows(40, 50, seed=3), np.arange(40))
    assert np.array_equal(sample_rows(40, 0, seed=3), np.arange(40))
