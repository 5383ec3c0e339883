"""ChartSpec: everything that decides a chart's pixels, with a stable hash the model bundle records."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PeriodInt = Annotated[int, msgspec.Meta(ge=2, le=500)]
Fraction = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
Colour = Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}$")]
Encoding = Literal["candles", "gasf", "candles+gasf"]
RendererName = Literal["numpy", "mplfinance"]

# Bump when a renderer's drawing code changes pixels for an unchanged spec.
RENDER_VERSION = "1"


class ChartStyle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Colours as #rrggbb; no grid, no axes, no text."""

    background: Colour = "#000000"
    up: Colour = "#26a69a"
    down: Colour = "#ef5350"
    volume_up: Colour = "#1b6e66"
    volume_down: Colour = "#9c3735"
    sma: tuple[Colour, ...] = ("#ffd54f", "#4fc3f7", "#ba68c8")
    bollinger: Colour = "#9e9e9e"
    rsi: Colour = "#ffb74d"
    macd: Colour = "#42a5f5"
    macd_signal: Colour = "#ff7043"


class ChartSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Window, size, style, panels, overlays, scaling and encoding of one kind of chart."""

    window: Annotated[int, msgspec.Meta(ge=5, le=2000)] = 64
    width: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 224
    height: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 224
    # numpy is the model-input default: ~15-20x mplfinance's charts/s, and a classifier trained on
    # its charts scores as well as one trained on mplfinance's (bench/bench_render.py). Serving a
    # model the other renderer's charts costs accuracy (a lot with overlays and volume), which is
    # why the renderer is part of the spec hash.
    renderer: RendererName = "numpy"
    encoding: Encoding = "candles"
    style: ChartStyle = msgspec.field(default_factory=ChartStyle)
    volume: bool = True
    rsi: bool = False
    macd: bool = False
    bollinger: bool = True
    sma: tuple[PeriodInt, ...] = (20,)
    bollinger_period: PeriodInt = 20
    bollinger_std: Annotated[float, msgspec.Meta(gt=0.0, le=5.0)] = 2.0
    rsi_period: PeriodInt = 14
    macd_fast: PeriodInt = 12
    macd_slow: PeriodInt = 26
    macd_signal: PeriodInt = 9
    price_scale: Literal["linear", "log"] = "linear"
    scale_overlays: bool = False
    padding: Annotated[float, msgspec.Meta(ge=0.0, le=0.4)] = 0.04
    body_fraction: Fraction = 0.7
    price_weight: PositiveInt = 4
    panel_weight: PositiveInt = 1
    gasf_fraction: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.5

    def __post_init__(self) -> None:
        if self.macd_fast >= self.macd_slow:
            msg = f"chart spec: macd_fast ({self.macd_fast}) must be below macd_slow ({self.macd_slow})"
            raise ValueError(msg)
        if len(self.sma) > len(self.style.sma):
            msg = f"chart spec: {len(self.sma)} moving averages but only {len(self.style.sma)} colours in style.sma"
            raise ValueError(msg)

    @property
    def warmup(self) -> int:
        """Bars before the window that the indicators need; the renderer uses at most window + warmup bars."""
        needs = [0]
        needs += [p - 1 for p in self.sma]
        if self.bollinger:
            needs.append(self.bollinger_period - 1)
        if self.rsi:
            needs.append(self.rsi_period * 3)
        if self.macd:
            needs.append(self.macd_slow * 3 + self.macd_signal)
        return max(needs)

    @property
    def bars_needed(self) -> int:
        return self.window + self.warmup

    @property
    def panels(self) -> tuple[str, ...]:
        names = ["price"]
        if self.volume:
            names.append("volume")
        if self.rsi:
            names.append("rsi")
        if self.macd:
            names.append("macd")
        return tuple(names)

    def canonical_json(self) -> bytes:
        return msgspec.json.encode(self)

    def spec_hash(self) -> str:
        """Short sha256 hex of the canonical JSON plus the render version; stable across runs."""
        digest = hashlib.sha256(RENDER_VERSION.encode() + b"\n" + self.canonical_json())
        return digest.hexdigest()[:16]


def decode_spec(raw: bytes | str, *, where: str = "spec") -> ChartSpec:
    """Decode a ChartSpec from YAML or JSON text; errors name the key path."""
    try:
        return msgspec.yaml.decode(raw, type=ChartSpec)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as e:
        msg = f"{where}: {e}"
        raise ValueError(msg) from None


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
