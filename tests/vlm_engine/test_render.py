from __future__ import annotations

import hashlib
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from tests.vlm_engine.synth import random_window
from vlm_engine.render import (
    ChartInputError,
    ChartSpec,
    ChartWindow,
    NumpyRenderer,
    SpecMismatch,
    chart_meta,
    check_spec,
    decode_png,
    decode_spec,
    encode_png,
    gasf,
    make_renderer,
    make_window,
)
from vlm_engine.render.mpl import MplfinanceRenderer
from vlm_engine.render.spec import hex_to_rgb

FULL = ChartSpec(rsi=True, macd=True, sma=(10, 30), price_scale="log", scale_overlays=True)


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_spec_hash_when_same_fields_then_equal_and_when_field_changes_then_differs() -> None:
    assert ChartSpec().spec_hash() == ChartSpec().spec_hash()
    assert len(ChartSpec().spec_hash()) == 16
    assert ChartSpec(window=65).spec_hash() != ChartSpec().spec_hash()
    assert ChartSpec(renderer="mplfinance").spec_hash() != ChartSpec().spec_hash()


def test_spec_hash_when_computed_in_another_process_then_identical() -> None:
    code = "from vlm_engine.render import ChartSpec; print(ChartSpec(rsi=True).spec_hash())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ChartSpec(rsi=True).spec_hash()


def test_decode_spec_when_yaml_round_trip_then_equal() -> None:
    assert decode_spec(msgspec.yaml.encode(FULL)) == FULL


def test_decode_spec_when_unknown_or_bad_field_then_error_names_path() -> None:
    with pytest.raises(ValueError, match="colour_scheme"):
        decode_spec(b"colour_scheme: dark\n", where="spec.yaml")
    with pytest.raises(ValueError, match=r"\$.width"):
        decode_spec(b"width: 3\n", where="spec.yaml")
    with pytest.raises(ValueError, match="macd_fast"):
        decode_spec(b"macd_fast: 30\nmacd_slow: 26\n")


def test_check_spec_when_hash_differs_then_refuses() -> None:
    check_spec(ChartSpec().spec_hash(), ChartSpec())
    with pytest.raises(SpecMismatch):
        check_spec(ChartSpec(window=32).spec_hash(), ChartSpec())


@pytest.mark.parametrize("renderer", ["numpy", "mplfinance"])
@pytest.mark.parametrize(
    "spec",
    [
        ChartSpec(),
        FULL,
        ChartSpec(encoding="gasf"),
        ChartSpec(encoding="candles+gasf", volume=False, sma=()),
    ],
)
def test_render_when_repeated_then_byte_identical_and_shaped(
    renderer: str, spec: ChartSpec
) -> None:
    spec = msgspec.structs.replace(spec, renderer=renderer)
    a, b = random_window(seed=1), random_window(seed=2)
    r = make_renderer(spec)
    first = r.render(a)
    r.render(b)
    again = r.render(a)
    fresh = make_renderer(spec).render(a)
    assert first.shape == (224, 224, 3)
    assert first.dtype == np.uint8
    assert _digest(first) == _digest(again) == _digest(fresh)
    assert _digest(first) != _digest(r.render(b))


@pytest.mark.parametrize("renderer", ["numpy", "mplfinance"])
def test_render_when_in_another_process_then_byte_identical(renderer: str) -> None:
    code = (
        "import hashlib, msgspec; from tests.vlm_engine.synth import random_window; "
        "from vlm_engine.render import ChartSpec, make_renderer; "
        f"spec = msgspec.structs.replace(ChartSpec(rsi=True, macd=True), renderer={renderer!r}); "
        "print(hashlib.sha256(make_renderer(spec).render(random_window(seed=3)).tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    spec = msgspec.structs.replace(ChartSpec(rsi=True, macd=True), renderer=renderer)
    assert out.stdout.strip() == _digest(make_renderer(spec).render(random_window(seed=3)))


def test_render_when_both_renderers_then_pixels_mostly_agree() -> None:
    window = random_window(seed=4)
    a = NumpyRenderer(spec=ChartSpec()).render(window)
    b = MplfinanceRenderer(spec=ChartSpec(renderer="mplfinance")).render(window)
    close = (np.abs(a.astype(int) - b.astype(int)).max(axis=-1) <= 48).mean()
    assert close > 0.85


def test_render_when_all_bars_rise_then_only_up_colour_in_price_panel() -> None:
    n = 80
    close = 100 + np.arange(n, dtype=float)
    window = make_window(
        symbol="UP",
        bar_seconds=60,
        timestamps=np.arange(n) * 60,
        open=close - 0.5,
        high=close + 0.2,
        low=close - 0.7,
        close=close,
        volume=np.full(n, 10.0),
    )
    spec = ChartSpec(bollinger=False, sma=())
    image = NumpyRenderer(spec=spec).render(window)
    price = image[: 224 * 4 // 5].reshape(-1, 3)
    colours = {tuple(int(v) for v in px) for px in np.unique(price, axis=0)}
    assert colours == {hex_to_rgb(spec.style.background), hex_to_rgb(spec.style.up)}


def test_render_when_fewer_bars_than_window_then_left_side_is_background() -> None:
    spec = ChartSpec(bollinger=False, sma=())
    image = NumpyRenderer(spec=spec).render(random_window(n=20))
    bg = np.array(hex_to_rgb(spec.style.background), dtype=np.uint8)
    assert (image[:, :100] == bg).all()
    assert not (image[:, 160:] == bg).all()


def test_render_when_bar_has_nan_then_input_error_names_bar() -> None:
    w = random_window(n=30)
    bad = ChartWindow(
        **{**msgspec.structs.asdict(w), "close": np.where(np.arange(30) == 5, np.nan, w.close)}
    )
    with pytest.raises(ChartInputError, match="bar 5"):
        NumpyRenderer(spec=ChartSpec()).render(bad)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("high", 1.0, "bracket"),
        ("volume", -1.0, "negative volume"),
        ("timestamps", 0, "increasing"),
    ],
)
def test_make_window_when_bad_bar_then_input_error(field: str, value: float, match: str) -> None:
    w = random_window(n=10)
    data = {
        k: np.array(getattr(w, k)) for k in ("timestamps", "open", "high", "low", "close", "volume")
    }
    data[field][4] = value
    with pytest.raises(ChartInputError, match=match):
        make_window(symbol="X", bar_seconds=60, **data)


def test_gasf_when_series_then_symmetric_bounded_with_cos2phi_diagonal() -> None:
    x = np.array([1.0, 3.0, 2.0, 5.0])
    g = gasf(x)
    scaled = 2 * (x - 1) / 4 - 1
    assert np.allclose(g, g.T)
    assert np.allclose(np.diag(g), 2 * scaled**2 - 1)
    assert g.min() >= -1 - 1e-12
    assert g.max() <= 1 + 1e-12


def test_png_when_round_trip_then_pixels_and_metadata_equal() -> None:
    spec = ChartSpec()
    window = random_window(seed=5)
    image = NumpyRenderer(spec=spec).render(window)
    meta = chart_meta(spec, window)
    pixels, back = decode_png(encode_png(image, meta))
    assert np.array_equal(pixels, image)
    assert back == meta
    assert back.first_ts == int(window.timestamps[-64])
    assert back.spec_hash == spec.spec_hash()


def test_decode_png_when_not_png_or_no_metadata_then_input_error() -> None:
    with pytest.raises(ChartInputError, match="not a readable PNG"):
        decode_png(b"hello", where="x.png")
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    with pytest.raises(ChartInputError, match="no vlmtrader chart metadata"):
        decode_png(buf.getvalue(), where="x.png")
