"""The dataset builder's chart rendering in independent shards (a TaskMap can spread them).

A shard is one symbol's consecutive planned samples (at most RENDER_CHUNK, the renderer's batch):
its charts are rendered, checked and PNG-encoded from that symbol's own ChartWindow only, so a
shard gives the same bytes wherever it runs. The texts stay with the builder (one seeded generator
walked in sample order), which takes the shards' charts back in plan order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from itertools import groupby
from typing import Final, Protocol

import msgspec
import numpy as np

from vlm_engine.dataset.errors import ValidationError
from vlm_engine.render import ChartSpec, ChartWindow, chart_meta, encode_png, make_renderer
from vlm_engine.shards import TaskMap

RENDER_CHUNK: Final = 256  # charts rendered per render_batch call while building


class RenderShard(msgspec.Struct, frozen=True, kw_only=True):
    """Charts of `symbol` ending at bar indices `ends` (plan order); end_ts names them in errors."""

    symbol: str
    ends: tuple[int, ...]
    end_ts: tuple[int, ...]


class RenderedChart(msgspec.Struct, frozen=True, kw_only=True):
    """One sample's chart as the dataset stores it: PNG bytes (with chart metadata) and the
    sha256 of its raw pixels."""

    png: bytes
    pixels_sha256: str


class PlannedChart(Protocol):
    """What a shard needs of a planned sample (builder.SampleRef has it)."""

    @property
    def symbol(self) -> str: ...

    @property
    def end(self) -> int: ...

    @property
    def end_ts(self) -> int: ...


def plan_shards(refs: Sequence[PlannedChart], size: int = RENDER_CHUNK) -> list[RenderShard]:
    """Consecutive samples of one symbol, `size` at most per shard, in the samples' order."""
    shards: list[RenderShard] = []
    for symbol, run in groupby(refs, key=lambda r: r.symbol):
        samples = list(run)
        for i in range(0, len(samples), size):
            part = samples[i : i + size]
            shards.append(
                RenderShard(
                    symbol=symbol,
                    ends=tuple(r.end for r in part),
                    end_ts=tuple(r.end_ts for r in part),
                )
            )
    return shards


def check_image(image: np.ndarray, where: str, spec: ChartSpec) -> None:
    """ValidationError naming the sample when the chart is not an RGB image of the spec's size
    or has one colour only."""
    if image.shape != (spec.height, spec.width, 3) or image.dtype != np.uint8:
        msg = f"{where}: corrupt image (shape {image.shape}, dtype {image.dtype})"
        raise ValidationError(msg)
    if int(image.max()) == int(image.min()):
        msg = f"{where}: empty image (every pixel is {int(image.min())})"
        raise ValidationError(msg)


def render_shard(
    shard: RenderShard,
    *,
    windows: Mapping[str, ChartWindow],
    spec: ChartSpec,
    compress_level: int,
) -> list[RenderedChart]:
    """The shard's charts, rendered in one batch from its symbol's window, checked and encoded."""
    window = windows[shard.symbol]
    need = spec.bars_needed
    charts = [window.slice(end - need + 1, end + 1) for end in shard.ends]
    images = make_renderer(spec).render_batch(charts)
    out = []
    for image, chart, end_ts in zip(images, charts, shard.end_ts, strict=True):
        check_image(image, f"sample {shard.symbol}@{end_ts}", spec)
        out.append(
            RenderedChart(
                png=encode_png(image, chart_meta(spec, chart), compress_level=compress_level),
                pixels_sha256=hashlib.sha256(image.tobytes()).hexdigest(),
            )
        )
    return out


def rendered_charts(
    refs: Sequence[PlannedChart],
    windows: Mapping[str, ChartWindow],
    spec: ChartSpec,
    *,
    compress_level: int,
    task_map: TaskMap | None = None,
) -> Iterator[RenderedChart]:
    """Every planned sample's chart in plan order: shard by shard here (lazily), or all shards
    through task_map (e.g. Ray tasks whose workers load `windows` from the bars path)."""
    shards = plan_shards(refs)
    shared = {"windows": windows, "spec": spec, "compress_level": compress_level}
    if task_map is None:
        for shard in shards:
            yield from render_shard(shard, **shared)  # type: ignore[arg-type]
        return
    parts = task_map(
        render_shard, shards, shared=shared, desc="charts", weights=[len(s.ends) for s in shards]
    )
    for part in parts:
        yield from part
