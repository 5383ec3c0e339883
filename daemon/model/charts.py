"""Chart PNGs -> Signals: the checks a PNG passes before decoding, and the one chart -> Signal rule
(calibrated CLIP p_up, clamped edge, confidence floor, the top pattern as the reason)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import numpy as np
import numpy.typing as npt

from daemon.errors import InputError
from daemon.model.active import ActiveModel
from daemon.model.loader import LoadedBundle
from daemon.model.prediction import ChartRefused, Prediction
from strategy.types import Signal
from vlm_engine.render.errors import ChartInputError
from vlm_engine.render.png import ChartMeta, decode_png

Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A chart PNG whose IHDR promises more decoded pixel bytes than this is refused before decoding
# (a decompression bomb: a few kB of zlib that inflate to hundreds of MB).
MAX_PNG_PIXEL_BYTES = 64 * 1024 * 1024
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class ChartSignalConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a chart's calibrated CLIP p_up becomes a Signal.

    confidence = |p_up - 0.5| * 2; below min_confidence the signal is neutral. A pattern is
    named in reasons when its calibrated probability is at least pattern_threshold.
    """

    min_confidence: Unit = 0.05
    pattern_threshold: Unit = 0.5
    max_edge: Annotated[float, msgspec.Meta(gt=0, le=0.5)] = 0.5


def chart_signal(
    meta: ChartMeta, p_up: float, pattern: str, pattern_p: float, config: ChartSignalConfig
) -> Signal:
    """One chart's calibrated p_up (and its most likely pattern) as a Signal at its last bar close."""
    from vlm_engine.clip import NO_PATTERN  # torch is loaded already: a bundle scored the chart

    p_up = 0.5 + max(-config.max_edge, min(config.max_edge, p_up - 0.5))
    confidence = min(1.0, abs(p_up - 0.5) * 2.0)
    ts = datetime.fromtimestamp(meta.last_ts, tz=UTC)
    reasons = (pattern,) if pattern != NO_PATTERN and pattern_p >= config.pattern_threshold else ()
    if confidence < config.min_confidence:
        p_up, confidence = 0.5, 0.0
    return Signal(
        symbol=meta.symbol, ts=ts, p_up=p_up, confidence=confidence, scorer="clip", reasons=reasons
    )


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, read before decoding (None when it is not a PNG)."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def png_decoded_bytes(data: bytes) -> int | None:
    """Bytes the PNG's pixels take once inflated, from its IHDR (None when it is not a PNG)."""
    size = png_size(data)
    if size is None or len(data) < 26:
        return None
    depth, color = data[24], data[25]
    channels = _PNG_CHANNELS.get(color, 4)
    return size[0] * size[1] * channels * max(depth, 1) // 8


def decode_chart(model: ActiveModel, png: bytes) -> tuple[npt.NDArray[np.uint8], ChartMeta]:
    """Check a chart PNG against the serving bundle (size, spec hash) and decode it; blocking."""
    bundle = model.bundle
    if bundle is None:
        msg = (
            "chart PNGs are scored by a bundle's CLIP model and none is loaded yet (the rule "
            "scorer is serving): load a bundle first"
        )
        raise ChartRefused(msg)
    spec = bundle.spec
    size = png_size(png)
    if size is None:
        msg = "chart: not a PNG (the body must start with the PNG signature and IHDR)"
        raise InputError(msg)
    inflated = png_decoded_bytes(png) or 0
    if inflated > MAX_PNG_PIXEL_BYTES:
        msg = (
            f"chart: {size[0]}x{size[1]} pixels decode to {inflated} bytes, over the limit of "
            f"{MAX_PNG_PIXEL_BYTES}"
        )
        raise InputError(msg)
    if size != (spec.width, spec.height):
        msg = (
            f"chart: image is {size[0]}x{size[1]}, bundle {bundle.bundle_id} scores "
            f"{spec.width}x{spec.height} charts of spec {bundle.spec_hash}"
        )
        raise ChartRefused(msg)
    try:
        pixels, meta = decode_png(png, where="chart")
    except ChartInputError as e:
        raise InputError(str(e)) from None
    if meta.spec_hash != bundle.spec_hash:
        msg = (
            f"chart: drawn with chart spec {meta.spec_hash}, bundle {bundle.bundle_id} was "
            f"trained on spec {bundle.spec_hash}: render it with the bundle's spec"
        )
        raise ChartRefused(msg)
    return pixels, meta


def score_charts(
    bundle: LoadedBundle,
    charts: Sequence[tuple[npt.NDArray[np.uint8], ChartMeta]],
    config: ChartSignalConfig,
) -> list[Prediction]:
    """Score decoded charts in one CLIP batch; blocking."""
    batch = bundle.engine.score_images(np.stack([pixels for pixels, _ in charts]))
    out: list[Prediction] = []
    for row, (_, meta) in enumerate(charts):
        scores = batch.row(row)
        signal = chart_signal(meta, scores.p_up, scores.top_pattern, scores.top_probability, config)
        out.append(
            Prediction(
                signal=signal,
                bundle_id=scores.bundle_id,
                patterns=dict(zip(scores.classes, scores.pattern_probs, strict=True)),
            )
        )
    return out
