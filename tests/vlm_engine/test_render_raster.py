from __future__ import annotations

import hashlib

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vlm_engine.synth import random_ohlcv, random_window
from vlm_engine.render import (
    RENDER_VERSION,
    ChartInputError,
    ChartSpec,
    ChartWindow,
    NumpyRenderer,
    make_window,
)
from vlm_engine.render.gasf import gasf, gasf_image
from vlm_engine.render.mpl import MplfinancePool, MplfinanceRenderer

CLIP_SPEC = ChartSpec(window=20, width=128, height=128, volume=False, bollinger=False, sma=())
SPECS = {
    "default": ChartSpec(),
    "clip": CLIP_SPEC,
    "panels": ChartSpec(rsi=True, macd=True, sma=(10, 30), scale_overlays=True),
    "gasf": ChartSpec(encoding="candles+gasf", window=32, width=96, height=64),
}
# sha256 (first 32 hex) of three charts per spec, drawn by the per-chart renderer of RENDER_VERSION 1.
# A change here means pixels changed: bump RENDER_VERSION (it is part of every spec hash, so
# models trained on the old pixels are refused) and update these digests on purpose.
GOLDEN = {
    "default": ("f1c32d481f003714", "4375bf0be5b233f07b0d3c77807731bd"),
    "clip": ("1ffb533707512c6c", "33db64c96302c794aadb7453a3732f18"),
    "panels": ("5442766d13f63c68", "3d2a3c7e8f1a3efecca999740181e998"),
    "gasf": ("ca7e93fb65c0a716", "18659f4997132ed01184d2281a679dc5"),
}


def _golden_windows(spec: ChartSpec) -> list[ChartWindow]:
    return [random_window(n, seed=seed) for seed, n in ((1, 120), (2, 12), (3, spec.bars_needed))]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_render_when_golden_windows_then_pixels_and_spec_hash_pinned(name: str) -> None:
    spec = SPECS[name]
    renderer = NumpyRenderer(spec=spec)
    digest = hashlib.sha256()
    for window in _golden_windows(spec):
        digest.update(renderer.render(window).tobytes())
    assert RENDER_VERSION == "1"
    assert (spec.spec_hash(), digest.hexdigest()[:32]) == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_render_batch_when_mixed_lengths_then_each_chart_equals_its_own_render(name: str) -> None:
    spec = SPECS[name]
    renderer = NumpyRenderer(spec=spec)
    lengths = [1, 2, spec.window, spec.bars_needed, spec.bars_needed + 50, 7, spec.window, 2]
    windows = [random_window(n, seed=10 + i) for i, n in enumerate(lengths)]
    batch = renderer.render_batch(windows)
    alone = np.stack([NumpyRenderer(spec=spec).render(w) for w in windows])
    assert batch.shape == (len(windows), spec.height, spec.width, 3)
    assert np.array_equal(batch, alone)
    assert not np.array_equal(batch[0], batch[1])


def test_render_batch_when_more_than_a_chunk_then_same_as_one_by_one() -> None:
    renderer = NumpyRenderer(spec=CLIP_SPEC)
    windows = [random_window(30, seed=s) for s in range(150)]
    batch = renderer.render_batch(windows)
    assert all(np.array_equal(batch[i], renderer.render(w)) for i, w in enumerate(windows))


def test_render_batch_when_out_given_then_written_in_place_and_bad_out_refused() -> None:
    renderer = NumpyRenderer(spec=CLIP_SPEC)
    windows = [random_window(40, seed=s) for s in range(3)]
    out = np.full((3, 128, 128, 3), 7, dtype=np.uint8)
    result = renderer.render_batch(windows, out=out)
    assert result is out
    assert np.array_equal(out, renderer.render_batch(windows))
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        renderer.render_batch(windows, out=np.zeros((2, 128, 128, 3), dtype=np.uint8))
    assert renderer.render_batch([]).shape == (0, 128, 128, 3)


def test_render_batch_when_one_window_bad_then_error_names_first_bad_window() -> None:
    good = random_window(60, seed=1, symbol="GOOD")
    bad_values = random_ohlcv(60, seed=2)
    bad_values["high"][45] = bad_values["low"][45] * 0.5  # high below low
    bad = ChartWindow(
        symbol="BAD",
        bar_seconds=60,
        timestamps=np.arange(60, dtype=np.int64) * 60,
        **bad_values,
    )
    later = ChartWindow(
        symbol="LATER",
        bar_seconds=60,
        timestamps=np.zeros(60, dtype=np.int64),
        **random_ohlcv(60, seed=3),
    )
    with pytest.raises(ChartInputError, match=r"'BAD'.*bar 45"):
        NumpyRenderer(spec=ChartSpec()).render_batch([good, bad, later])
    with pytest.raises(ChartInputError, match=r"'LATER'.*not strictly increasing"):
        NumpyRenderer(spec=ChartSpec()).render_batch([good, later])


def test_render_batch_when_ragged_or_empty_window_then_chart_input_error() -> None:
    ragged = ChartWindow(
        symbol="RAG",
        bar_seconds=60,
        timestamps=np.arange(10, dtype=np.int64),
        **{**random_ohlcv(10, seed=1), "volume": np.ones(9)},
    )
    empty = ChartWindow(
        symbol="NONE",
        bar_seconds=60,
        timestamps=np.zeros(0, dtype=np.int64),
        **{k: np.zeros(0) for k in ("open", "high", "low", "close", "volume")},
    )
    renderer = NumpyRenderer(spec=CLIP_SPEC)
    with pytest.raises(ChartInputError, match="column volume has shape"):
        renderer.render_batch([random_window(10, seed=2), ragged])
    with pytest.raises(ChartInputError, match="no bars"):
        renderer.render(empty)


def test_render_when_flat_prices_and_zero_volume_then_drawn_without_warnings() -> None:
    n = 90
    window = make_window(
        symbol="FLAT",
        bar_seconds=60,
        timestamps=np.arange(n) * 60,
        open=np.full(n, 10.0),
        high=np.full(n, 10.0),
        low=np.full(n, 10.0),
        close=np.full(n, 10.0),
        volume=np.zeros(n),
    )
    with np.errstate(all="raise"):
        image = NumpyRenderer(spec=ChartSpec(rsi=True, macd=True)).render(window)
    assert (image != image[0, -1]).any()  # the flat candles are still drawn


def test_gasf_image_when_resized_then_equals_nearest_neighbour_indexing() -> None:
    series = random_ohlcv(50, seed=4)["close"]
    for height, width in ((64, 32), (20, 130), (50, 50)):
        field = gasf(series)
        n = field.shape[0]
        rows = np.arange(height) * n // height
        cols = np.arange(width) * n // width
        v = (field + 1.0) / 2.0
        rgb = np.rint(np.stack([v, 1.0 - np.abs(2.0 * v - 1.0), 1.0 - v], axis=-1) * 255.0)
        expected = rgb.astype(np.uint8)[rows[:, None], cols[None, :]]
        assert np.array_equal(gasf_image(series, height=height, width=width), expected)


def test_mplfinance_pool_when_reused_for_two_batches_then_same_as_serial() -> None:
    spec = msgspec.structs.replace(CLIP_SPEC, renderer="mplfinance")
    windows = [random_window(30 + s, seed=s) for s in range(6)]
    serial = MplfinanceRenderer(spec=spec).render_batch(windows)
    with MplfinancePool(spec=spec, processes=2, chunk_size=2) as pool:
        pool.warm_up()
        first = pool.render_batch(windows)
        second = pool.render_batch(windows[::-1])
        empty = pool.render_batch([])
    assert np.array_equal(first, serial)
    assert np.array_equal(second, serial[::-1])
    assert empty.shape == (0, 128, 128, 3)


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(2, 40),
    width=st.integers(16, 160),
    height=st.integers(16, 96),
    body_fraction=st.floats(0.05, 1.0),
    log_scale=st.booleans(),
    volume=st.booleans(),
    vol=st.sampled_from([0.0, 0.002, 0.05]),
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=9),
    seed=st.integers(0, 10_000),
)
def test_render_batch_when_wick_and_body_one_span_per_column_then_same_pixels_as_two_layers(
    window: int,
    width: int,
    height: int,
    body_fraction: float,
    log_scale: bool,
    volume: bool,
    vol: float,
    lengths: list[int],
    seed: int,
) -> None:
    spec = ChartSpec(
        window=window,
        width=width,
        height=height,
        body_fraction=body_fraction,
        price_scale="log" if log_scale else "linear",
        volume=volume,
        bollinger=False,
        sma=(),
    )
    windows = [
        make_window(
            symbol="S",
            bar_seconds=60,
            timestamps=np.arange(n) * 60,
            **random_ohlcv(n, seed=seed + i, vol=vol),
        )
        for i, n in enumerate(lengths)
    ]
    merged = NumpyRenderer(spec=spec)
    layered = NumpyRenderer(spec=spec)
    assert layered._columns is not None
    layered._columns.disjoint = False  # the wick layer, then the body layer over it
    np.testing.assert_array_equal(merged.render_batch(windows), layered.render_batch(windows))
