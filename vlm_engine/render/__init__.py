"""Deterministic chart rendering shared by training and the live daemon."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from vlm_engine.render.errors import ChartError, ChartInputError, SpecMismatch
from vlm_engine.render.gasf import gasf, gasf_image
from vlm_engine.render.png import ChartMeta, chart_meta, decode_png, encode_png
from vlm_engine.render.raster import NumpyRenderer
from vlm_engine.render.spec import RENDER_VERSION, ChartSpec, ChartStyle, decode_spec
from vlm_engine.render.window import ChartWindow, make_window, validate_window


class Renderer(Protocol):
    """Turns bar windows into HxWx3 uint8 images for one ChartSpec."""

    name: str
    spec: ChartSpec
    thread_safe: bool  # render_batch may run in several threads at once

    def render(self, window: ChartWindow) -> npt.NDArray[np.uint8]: ...

    def render_batch(
        self, windows: list[ChartWindow], *, out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """Charts stacked as BxHxWx3, into `out` when given (C-contiguous uint8 of that shape)."""
        ...


def make_renderer(spec: ChartSpec) -> Renderer:
    """The renderer the spec names (mplfinance is imported only when asked for)."""
    if spec.renderer == "mplfinance":
        from vlm_engine.render.mpl import MplfinanceRenderer

        return MplfinanceRenderer(spec=spec)
    return NumpyRenderer(spec=spec)


def check_spec(expected_hash: str, spec: ChartSpec) -> None:
    """Raise SpecMismatch when a model or file was made with another chart spec."""
    if expected_hash != spec.spec_hash():
        msg = f"chart spec mismatch: trained on {expected_hash}, rendering {spec.spec_hash()}"
        raise SpecMismatch(msg)


__all__ = [
    "RENDER_VERSION",
    "ChartError",
    "ChartInputError",
    "ChartMeta",
    "ChartSpec",
    "ChartStyle",
    "ChartWindow",
    "NumpyRenderer",
    "Renderer",
    "SpecMismatch",
    "chart_meta",
    "check_spec",
    "decode_png",
    "decode_spec",
    "encode_png",
    "gasf",
    "gasf_image",
    "make_renderer",
    "make_window",
    "validate_window",
]
