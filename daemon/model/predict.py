"""POST /predict (an OHLCV window or a chart PNG) with what a slot serves: the trading daemon's and
`vlmtrader serve`'s, one request at a time or micro-batched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import structlog

from daemon.errors import InputError, InvariantError
from daemon.model.active import ActiveModel
from daemon.model.batcher import BatchConfig, MicroBatcher
from daemon.model.charts import ChartSignalConfig, decode_chart, score_charts
from daemon.model.prediction import ChartRefused, Prediction
from daemon.model.scoring import build_window, log_scored, score_windows
from strategy.bars import Window
from strategy.types import Bar
from vlm_engine.render.png import ChartMeta

log = structlog.get_logger("daemon.model")


class WindowItem(NamedTuple):
    window: Window


class ChartItem(NamedTuple):
    pixels: npt.NDArray[np.uint8]
    meta: ChartMeta


Item = WindowItem | ChartItem


def score_items(
    model: ActiveModel, items: Sequence[Item], charts: ChartSignalConfig
) -> list[Prediction | Exception]:
    """One scoring call per kind for a batch of requests (blocking); an item that the model cannot
    score any more (a swap in between) gets its own exception."""
    out: list[Prediction | Exception] = [InvariantError("not scored")] * len(items)
    windows: list[tuple[int, Window]] = []
    images: list[tuple[int, ChartItem]] = []
    bundle = model.bundle
    for i, item in enumerate(items):
        if isinstance(item, ChartItem):
            if bundle is None or item.meta.spec_hash != bundle.spec_hash:
                out[i] = ChartRefused("chart: the model bundle changed while it waited: send again")
            else:
                images.append((i, item))
        elif len(item.window) < model.min_bars:  # a swap to a model needing longer windows
            out[i] = InputError(f"bars: {len(item.window)} given, the model needs {model.min_bars}")
        else:
            windows.append((i, item.window))
    if windows:
        scored = score_windows(model.scorer, [w for _, w in windows])
        log_scored(model.scorer, scored)
        for (i, _), signal in zip(windows, scored.signals, strict=True):
            out[i] = Prediction(signal=signal, bundle_id=model.bundle_id)
    if images and bundle is not None:
        started = time.perf_counter()
        predictions = score_charts(bundle, [(it.pixels, it.meta) for _, it in images], charts)
        log.info(
            "model.inferred",
            scorer="clip",
            items=len(images),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        for (i, _), prediction in zip(images, predictions, strict=True):
            out[i] = prediction
    return out


class ServesModels(Protocol):
    """What a predictor reads from its slot."""

    @property
    def active(self) -> ActiveModel: ...

    @property
    def loading(self) -> bool: ...


class ModelPredictor:
    """POST /predict (an OHLCV window or a chart PNG) with what the slot serves now.

    With a batch config (`vlmtrader serve`) requests are micro-batched; without one (the trading
    daemon) each is scored alone under the lock the pipeline takes, so neither interleaves."""

    def __init__(
        self,
        *,
        slot: ServesModels,
        lock: asyncio.Lock | None = None,
        batch: BatchConfig | None = None,
        charts: ChartSignalConfig | None = None,
    ) -> None:
        self.slot = slot
        self.lock = lock if lock is not None else asyncio.Lock()
        self.charts = charts or ChartSignalConfig()
        self.batcher: MicroBatcher[Item, Prediction] | None = None
        if batch is not None:
            self.batcher = MicroBatcher(score=self._score_batch, config=batch, on_batch=_batched)

    async def predict(self, symbol: str, bars: Sequence[Bar]) -> Prediction:
        model = self.slot.active
        window = build_window(symbol, bars, bar_seconds=model.bar_seconds, min_bars=model.min_bars)
        return await self._submit(WindowItem(window))

    async def predict_chart(self, png: bytes) -> Prediction:
        model = self.slot.active
        if model.bundle is None:
            why = "while the bundle loads" if self.slot.loading else "and no model bundle is loaded"
            msg = (
                f"chart PNGs are scored by a bundle's CLIP model; the rule scorer is serving "
                f"{why}: load one (--bundle DIR, scorer.bundle, or POST /bundle/reload)"
            )
            raise ChartRefused(msg)
        pixels, meta = await asyncio.to_thread(decode_chart, model, png)
        return await self._submit(ChartItem(pixels, meta))

    async def _submit(self, item: Item) -> Prediction:
        if self.batcher is not None:
            return await self.batcher.submit(item)
        model = self.slot.active  # read once: a swap never splits a call
        if isinstance(item, WindowItem) and not model.scorer.blocking:
            (result,) = score_items(model, [item], self.charts)
        else:
            async with self.lock:
                (result,) = await asyncio.to_thread(score_items, model, [item], self.charts)
        if isinstance(result, Exception):
            raise result
        return result

    def _score_batch(self, items: list[Item]) -> list[Prediction | Exception]:
        return score_items(self.slot.active, items, self.charts)


def _batched(size: int, seconds: float) -> None:
    log.debug("predict.batch_scored", size=size, duration_ms=round(seconds * 1000, 3))
