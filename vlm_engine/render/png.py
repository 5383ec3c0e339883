"""PNG export with the chart's provenance in PNG text chunks, and reading it back."""

from __future__ import annotations

import io

import msgspec
import numpy as np
import numpy.typing as npt
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from vlm_engine.render.errors import ChartInputError
from vlm_engine.render.spec import RENDER_VERSION, ChartSpec
from vlm_engine.render.window import ChartWindow

_PREFIX = "vlmtrader:"


class ChartMeta(msgspec.Struct, frozen=True, kw_only=True):
    """What a chart image shows and how it was drawn."""

    symbol: str
    bar_seconds: int
    first_ts: int
    last_ts: int
    bars: int
    spec_hash: str
    renderer: str
    render_version: str = RENDER_VERSION
    spec_json: str = ""


def chart_meta(spec: ChartSpec, window: ChartWindow) -> ChartMeta:
    """Metadata of the chart `spec` draws from `window` (only the shown bars count)."""
    shown = window.tail(spec.window)
    return ChartMeta(
        symbol=window.symbol,
        bar_seconds=window.bar_seconds,
        first_ts=int(shown.timestamps[0]),
        last_ts=int(shown.timestamps[-1]),
        bars=len(shown),
        spec_hash=spec.spec_hash(),
        renderer=spec.renderer,
        spec_json=spec.canonical_json().decode(),
    )


def encode_png(image: npt.NDArray[np.uint8], meta: ChartMeta, *, compress_level: int = 6) -> bytes:
    """PNG bytes of an HxWx3 uint8 image with every ChartMeta field as a text chunk."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        msg = f"encode_png: expected an HxWx3 uint8 image, got {image.dtype} {image.shape}"
        raise ChartInputError(msg)
    info = PngImagePlugin.PngInfo()
    for key, value in msgspec.structs.asdict(meta).items():
        info.add_text(_PREFIX + key, str(value))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes, *, where: str = "png") -> tuple[npt.NDArray[np.uint8], ChartMeta]:
    """Pixels and metadata of a chart PNG; ChartInputError names what is wrong."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            texts = dict(getattr(img, "text", {}))
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        msg = f"{where}: not a readable PNG ({e})"
        raise ChartInputError(msg) from None
    fields = {k[len(_PREFIX) :]: v for k, v in texts.items() if k.startswith(_PREFIX)}
    if not fields:
        msg = f"{where}: no vlmtrader chart metadata in the PNG text chunks"
        raise ChartInputError(msg)
    try:
        meta = msgspec.convert(fields, type=ChartMeta, strict=False)
    except msgspec.ValidationError as e:
        msg = f"{where}: bad chart metadata: {e}"
        raise ChartInputError(msg) from None
    return pixels, meta
