"""The prediction API on its own, without trading: a micro-batcher feeding the warm model, hot-swap, clean stop.

Concurrent POST /predict requests are validated on the event loop, then queued; one worker
collects them for up to `batch.max_wait_ms` (from the first request's arrival) or until
`batch.max_items` are waiting, scores them in one call through asyncio.to_thread and resolves
each request's future. The served model is read once per batch, so a bundle swap (POST
/bundle/reload) never splits a batch. Until a bundle has loaded, or with `--rules`, the rule
scorer answers OHLCV windows; chart PNGs need a bundle's CLIP model.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, NamedTuple, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import structlog

from daemon.api.app import ChartPrediction, ChartRefused, build_app
from daemon.api.auth import token_from_env
from daemon.api.config import ApiConfig
from daemon.api.metrics import Metrics
from daemon.api.server import ApiServer
from daemon.control import Controller
from daemon.errors import EXIT_CONFIG, EXIT_OK, InputError, InvariantError, TransientError
from daemon.ml_loader import BundleUnusable
from daemon.predictor import build_window
from daemon.reload_plan import ReloadReport
from daemon.scorer_slot import log_drift
from strategy.bars import Window
from strategy.clip_scorer import ClipScorerConfig
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.scoring import Scorer
from strategy.types import Bar, Signal, TradingState
from vlm_engine.clip import NO_PATTERN
from vlm_engine.render import ChartInputError
from vlm_engine.render.png import ChartMeta, decode_png

log = structlog.get_logger("daemon.serve")

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
T = TypeVar("T")
R = TypeVar("R")
RULES_MIN_BARS = 8
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NO_TRADING = (
    "`vlmtrader serve` only predicts; {what} is a command for the trading daemon (`vlmtrader run`)"
)


class BatchConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """max_items per model call; max_wait_ms a request may wait for company; queue_size before 503."""

    max_items: PositiveInt = 32
    max_wait_ms: NonNegativeFloat = 5.0
    queue_size: PositiveInt = 1_024
    drain_seconds: NonNegativeFloat = 10.0


class ServeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The prediction service: where it listens, how it batches, and how bundles are loaded."""

    api: ApiConfig = msgspec.field(default_factory=lambda: ApiConfig(enabled=True))
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    bar_seconds: PositiveInt = (
        60  # bar spacing of windows for the rule scorer (a bundle has its own)
    )
    mode: Literal["fused", "xgb", "clip"] = "fused"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    rules: RuleScorerConfig = msgspec.field(default_factory=RuleScorerConfig)
    clip: ClipScorerConfig = msgspec.field(default_factory=ClipScorerConfig)


class Overloaded(TransientError):
    """The prediction queue is full, or the service is stopping: retry later."""


class BatchStats(msgspec.Struct, kw_only=True):
    """Counters of the micro-batcher."""

    submitted: int = 0
    scored: int = 0
    batches: int = 0
    largest: int = 0
    abandoned: int = 0
    rejected: int = 0


class _Pending(NamedTuple, Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    arrived: float


class MicroBatcher(Generic[T, R]):
    """Collects submit() calls for up to max_wait_ms or max_items and scores them in one threaded call.

    score(items) returns one result per item, in order; an Exception in a slot fails only that
    item's request, an exception raised by score() fails every request of the batch.
    """

    def __init__(
        self,
        *,
        score: Callable[[list[T]], Sequence[R | Exception]],
        config: BatchConfig | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.config = config or BatchConfig()
        self.stats = BatchStats()
        self._score = score
        self._on_batch = on_batch
        self._pending: deque[_Pending[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._filled = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def accepting(self) -> bool:
        return self._worker is not None and not self._closing

    async def __aenter__(self) -> MicroBatcher[T, R]:
        if self._worker is not None:
            msg = "MicroBatcher is not reentrant"
            raise RuntimeError(msg)
        self._closing = False
        self._arrived = asyncio.Event()
        self._filled = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop taking requests, score those already queued (up to drain_seconds), then stop."""
        worker = self._worker
        if worker is None:
            return
        self._closing = True
        self._arrived.set()
        self._filled.set()
        try:
            await asyncio.wait_for(asyncio.shield(worker), self.config.drain_seconds or None)
        except TimeoutError:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            log.warning("predict.drain_timed_out", abandoned=len(self._pending))
        while self._pending:
            self._fail(self._pending.popleft(), Overloaded("the prediction service is stopping"))
        self._worker = None

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (or its exception); Overloaded when full or stopping."""
        if not self.accepting:
            msg = "the prediction service is not running (starting or stopping): retry"
            raise Overloaded(msg)
        if len(self._pending) >= self.config.queue_size:
            self.stats.rejected += 1
            msg = f"{len(self._pending)} predictions are queued (batch.queue_size): retry shortly"
            raise Overloaded(msg)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Pending(item, future, loop.time()))
        self.stats.submitted += 1
        self._arrived.set()
        if len(self._pending) >= self.config.max_items:
            self._filled.set()
        return await future

    async def _run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            wait = self._pending[0].arrived + cfg.max_wait_ms / 1000.0 - loop.time()
            if len(self._pending) < cfg.max_items and wait > 0 and not self._closing:
                self._filled.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._filled.wait(), wait)
            take = min(cfg.max_items, len(self._pending))
            await self._score_batch([self._pending.popleft() for _ in range(take)])

    async def _score_batch(self, batch: list[_Pending[T, R]]) -> None:
        live = [p for p in batch if not p.future.done()]  # a request whose client left is skipped
        self.stats.abandoned += len(batch) - len(live)
        if not live:
            return
        started = time.perf_counter()
        try:
            results = await asyncio.to_thread(self._score, [p.item for p in live])
        except (
            Exception
        ) as e:  # handed to every waiting request, which raises it; the worker lives on
            for p in live:
                self._fail(p, e)
            return
        seconds = time.perf_counter() - started
        if len(results) != len(live):
            error = InvariantError(f"scorer returned {len(results)} results for {len(live)} items")
            for p in live:
                self._fail(p, error)
            return
        for p, result in zip(live, results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, Exception):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)
        self.stats.batches += 1
        self.stats.scored += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        if self._on_batch is not None:
            self._on_batch(len(live), seconds)

    @staticmethod
    def _fail(pending: _Pending[T, R], error: BaseException) -> None:
        if not pending.future.done():
            pending.future.set_exception(error)


# ---- the served model -------------------------------------------------------------------------
class ServedModel:
    """What answers requests now: a scorer for windows, and a bundle's CLIP server for chart PNGs."""

    def __init__(
        self,
        *,
        scorer: Scorer,
        bar_seconds: int,
        min_bars: int,
        bundle_id: str | None = None,
        path: Path | None = None,
        server: Any = None,
    ) -> None:
        self.scorer = scorer
        self.bar_seconds = bar_seconds
        self.min_bars = min_bars
        self.bundle_id = bundle_id
        self.path = path
        self.server = server  # vlm_engine.infer.ModelServer when a bundle is loaded
        self.spec_hash: str | None = server.spec.spec_hash() if server is not None else None


class _WindowItem(NamedTuple):
    window: Window


class _ChartItem(NamedTuple):
    pixels: npt.NDArray[np.uint8]
    meta: ChartMeta


_Item = _WindowItem | _ChartItem
_Result = Signal | ChartPrediction


def load_served_model(path: Path, config: ServeConfig) -> ServedModel:
    """Load, validate and warm a bundle (BundleUnusable, one line, when it cannot serve)."""
    from daemon.ml_loader import load_bundle_models
    from daemon.scorer_slot import bundle_failure
    from vlm_engine.infer import InferenceConfig

    try:
        models = load_bundle_models(
            path, inference=InferenceConfig(device=config.device, threads=config.threads)
        )
        scorer = models.scorer(mode=config.mode)
    except InputError:
        raise
    except ValueError as e:
        msg = f"{path}: {' '.join(str(e).split())}"
        raise BundleUnusable(msg) from None
    except Exception as e:  # any library error of a bundle that passed its hashes
        raise bundle_failure(path, e) from None
    return ServedModel(
        scorer=scorer,
        bar_seconds=models.xgb.meta.bar_seconds,
        min_bars=models.bars_needed,
        bundle_id=models.bundle_id,
        path=Path(path),
        server=models.server,
    )


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, read before decoding (None when it is not a PNG)."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


# A chart PNG whose IHDR promises more decoded pixel bytes than this is refused before decoding
# (a decompression bomb: a few kB of zlib that inflate to hundreds of MB).
MAX_PNG_PIXEL_BYTES = 64 * 1024 * 1024
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_decoded_bytes(data: bytes) -> int | None:
    """Bytes the PNG's pixels take once inflated, from its IHDR (None when it is not a PNG)."""
    size = png_size(data)
    if size is None or len(data) < 26:
        return None
    depth, color = data[24], data[25]
    channels = _PNG_CHANNELS.get(color, 4)
    return size[0] * size[1] * channels * max(depth, 1) // 8


def decode_chart(model: ServedModel, png: bytes) -> tuple[npt.NDArray[np.uint8], ChartMeta]:
    """Check a chart PNG against the model's bundle (size, spec hash) and decode it; blocking."""
    if model.server is None:
        msg = (
            "chart PNGs are scored by a bundle's CLIP model and none is loaded yet (the rule "
            "scorer is serving): load a bundle first"
        )
        raise ChartRefused(msg)
    spec = model.server.spec
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
            f"chart: image is {size[0]}x{size[1]}, bundle {model.bundle_id} scores "
            f"{spec.width}x{spec.height} charts of spec {model.spec_hash}"
        )
        raise ChartRefused(msg)
    try:
        pixels, meta = decode_png(png, where="chart")
    except ChartInputError as e:
        raise InputError(str(e)) from None
    if meta.spec_hash != model.spec_hash:
        msg = (
            f"chart: drawn with chart spec {meta.spec_hash}, bundle {model.bundle_id} was "
            f"trained on spec {model.spec_hash}: render it with the bundle's spec"
        )
        raise ChartRefused(msg)
    return pixels, meta


def score_charts(
    model: ServedModel,
    charts: Sequence[tuple[npt.NDArray[np.uint8], ChartMeta]],
    clip: ClipScorerConfig,
) -> list[ChartPrediction]:
    """Score decoded charts in one CLIP batch; blocking."""
    assert model.server is not None
    batch = model.server.live.score_images(np.stack([pixels for pixels, _ in charts]))
    out: list[ChartPrediction] = []
    for row, (_, meta) in enumerate(charts):
        scores = batch.row(row)
        signal = chart_signal(meta, scores.p_up, clip)
        if scores.top_pattern != NO_PATTERN and scores.top_probability >= clip.pattern_threshold:
            signal = msgspec.structs.replace(signal, reasons=(scores.top_pattern,))
        out.append(
            ChartPrediction(
                signal=signal,
                bundle_id=scores.bundle_id,
                patterns=dict(zip(scores.classes, scores.pattern_probs, strict=True)),
            )
        )
    return out


def chart_signal(meta: ChartMeta, p_up: float, config: ClipScorerConfig) -> Signal:
    """The calibrated p_up of one chart as a Signal at the chart's last bar close."""
    p_up = 0.5 + max(-config.max_edge, min(config.max_edge, p_up - 0.5))
    confidence = min(1.0, abs(p_up - 0.5) * 2.0)
    ts = datetime.fromtimestamp(meta.last_ts, tz=UTC)
    if confidence < config.min_confidence:
        return Signal(symbol=meta.symbol, ts=ts, p_up=0.5, confidence=0.0, scorer="clip")
    return Signal(symbol=meta.symbol, ts=ts, p_up=p_up, confidence=confidence, scorer="clip")


class PredictionService:
    """The Predictor, ChartPredictor and DaemonControl of `vlmtrader serve`."""

    def __init__(
        self, *, config: ServeConfig, bundle: Path | None = None, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.bundle_path = bundle
        self.loading = bundle is not None
        self.model = ServedModel(
            scorer=RuleScorer(config=config.rules),
            bar_seconds=config.bar_seconds,
            min_bars=RULES_MIN_BARS,
        )
        self.metrics = metrics
        self.batcher: MicroBatcher[_Item, _Result] = MicroBatcher(
            score=self._score, config=config.batch, on_batch=self._observe
        )
        self._swap_lock = asyncio.Lock()

    # ---- models ----------------------------------------------------------------------------
    async def load(self, path: Path) -> str:
        """Load and warm a bundle off the loop, then swap it in; a bad one leaves the old serving."""
        async with self._swap_lock:
            try:
                model = await asyncio.to_thread(load_served_model, path, self.config)
            except BundleUnusable as e:
                log.error(
                    "bundle.load_failed",
                    path=str(path),
                    error=str(e),
                    scorer=self.model.scorer.name,
                )
                raise
            finally:
                self.loading = False
            previous = self.model
            self.model = model
            self.bundle_path = Path(path)
        log.info(
            "bundle.loaded",
            path=str(path),
            bundle_id=model.bundle_id,
            previous=previous.bundle_id or previous.scorer.name,
            scorer=model.scorer.name,
            spec_hash=model.spec_hash,
        )
        return model.bundle_id or ""

    def _observe(self, size: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.inference.observe(seconds)
        log.debug("predict.batch_scored", size=size, duration_ms=round(seconds * 1000, 3))

    # ---- Predictor / ChartPredictor ----------------------------------------------------------
    async def predict(self, symbol: str, bars: Sequence[Bar]) -> Signal:
        model = self.model
        window = build_window(symbol, bars, bar_seconds=model.bar_seconds, min_bars=model.min_bars)
        result = await self.batcher.submit(_WindowItem(window))
        if not isinstance(result, Signal):  # pragma: no cover - _score keeps the kinds apart
            msg = f"window scored as {type(result).__name__}"
            raise InvariantError(msg)
        return result

    async def predict_chart(self, png: bytes) -> ChartPrediction:
        model = self.model
        if model.server is None:
            why = "while the bundle loads" if self.loading else "and no model bundle is loaded"
            msg = (
                f"chart PNGs are scored by a bundle's CLIP model; this service runs the rule scorer "
                f"{why}: start with --bundle DIR or POST /bundle/reload"
            )
            raise ChartRefused(msg)
        pixels, meta = await asyncio.to_thread(decode_chart, model, png)
        result = await self.batcher.submit(_ChartItem(pixels, meta))
        if not isinstance(result, ChartPrediction):  # pragma: no cover
            msg = f"chart scored as {type(result).__name__}"
            raise InvariantError(msg)
        return result

    def _score(self, items: list[_Item]) -> list[_Result | Exception]:
        """One call per kind for a whole batch (runs in a worker thread)."""
        model = self.model  # read once: a swap never splits a batch
        out: list[_Result | Exception] = [InvariantError("not scored")] * len(items)
        windows = [(i, it.window) for i, it in enumerate(items) if isinstance(it, _WindowItem)]
        charts = [(i, it) for i, it in enumerate(items) if isinstance(it, _ChartItem)]
        if windows:
            self._score_windows(model, windows, out)
        if charts:
            self._score_charts(model, charts, out)
        return out

    def _score_windows(
        self, model: ServedModel, windows: list[tuple[int, Window]], out: list[_Result | Exception]
    ) -> None:
        ready: list[tuple[int, Window]] = []
        for i, window in windows:
            if len(window) < model.min_bars:  # a swap to a model needing longer windows
                out[i] = InputError(f"bars: {len(window)} given, the model needs {model.min_bars}")
            else:
                ready.append((i, window))
        if not ready:
            return
        signals = model.scorer.score([w for _, w in ready])
        for (i, _), sig in zip(ready, signals, strict=True):
            out[i] = sig
        log_drift(model.scorer)

    def _score_charts(
        self,
        model: ServedModel,
        charts: list[tuple[int, _ChartItem]],
        out: list[_Result | Exception],
    ) -> None:
        ready: list[tuple[int, _ChartItem]] = []
        for i, item in charts:
            if model.server is None or item.meta.spec_hash != model.spec_hash:
                out[i] = ChartRefused("chart: the model bundle changed while it waited: send again")
            else:
                ready.append((i, item))
        if not ready:
            return
        predictions = score_charts(
            model, [(item.pixels, item.meta) for _, item in ready], self.config.clip
        )
        for (i, _), prediction in zip(ready, predictions, strict=True):
            out[i] = prediction

    # ---- DaemonControl --------------------------------------------------------------------------
    async def pause(self, reason: str) -> None:
        raise InputError(_NO_TRADING.format(what="pause"))

    async def resume(self, reason: str) -> None:
        raise InputError(_NO_TRADING.format(what="resume"))

    async def flatten(self, symbol: str | None, reason: str) -> int:
        raise InputError(_NO_TRADING.format(what="flatten"))

    async def set_trading_state(self, state: TradingState, reason: str) -> None:
        raise InputError(_NO_TRADING.format(what="set_state"))

    async def reload_strategy(self) -> ReloadReport:
        raise InputError(_NO_TRADING.format(what="reload_strategy"))

    async def reload_bundle(self, path: str | None) -> str:
        target = Path(path) if path else self.bundle_path
        if target is None:
            msg = 'no bundle to reload: started with --rules; name one as {"path": DIR}'
            raise InputError(msg)
        return await self.load(target)

    def status(self) -> dict[str, Any]:
        model, stats = self.model, self.batcher.stats
        return {
            "mode": "serve",
            "scorer": model.scorer.name,
            "bundle_id": model.bundle_id,
            "bundle_path": str(model.path) if model.path else None,
            "spec_hash": model.spec_hash,
            "loading": self.loading,
            "queued": self.batcher.depth,
            "requests": stats.scored,
            "batches": stats.batches,
            "largest_batch": stats.largest,
            "rejected": stats.rejected,
        }

    def readiness(self) -> dict[str, bool]:
        return {"model_warm": not self.loading, "accepting": self.batcher.accepting}


# ---- the process ------------------------------------------------------------------------------
async def serve(config: ServeConfig, *, bundle: Path | None, token: str | None) -> int:
    """Listen until SIGTERM/SIGINT (exit 0) or until the startup bundle fails to load (exit 2)."""
    metrics = Metrics()
    service = PredictionService(config=config, bundle=bundle, metrics=metrics)
    metrics.add_queue("predict", lambda: service.batcher.depth)
    app = build_app(
        controller=Controller(control=service),
        metrics=metrics,
        predictor=service,
        token=token,
        config=config.api,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = EXIT_OK
    async with service.batcher, ApiServer(config=config.api, app=app) as server:
        log.info(
            "serve.started",
            url=server.url,
            port=server.port,
            scorer=service.model.scorer.name,
            bundle=str(bundle) if bundle else None,
            max_batch=config.batch.max_items,
            max_wait_ms=config.batch.max_wait_ms,
        )
        if bundle is not None and not await _load_or_stop(service, bundle, stop):
            code = EXIT_CONFIG
        else:
            await stop.wait()
        log.info("serve.stopping", queued=service.batcher.depth)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    stats = service.batcher.stats
    log.info("serve.stopped", requests=stats.scored, batches=stats.batches, exit_code=code)
    return code


async def _load_or_stop(service: PredictionService, bundle: Path, stop: asyncio.Event) -> bool:
    """Load the startup bundle while serving rules; False when it cannot be used."""
    loader = asyncio.create_task(service.load(bundle), name="bundle-load")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({loader, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not loader.done():  # stopped while loading: the thread finishes, its result is unused
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError, BundleUnusable):
            await loader
        return True
    stopper.cancel()
    try:
        loader.result()
    except BundleUnusable as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    await stop.wait()
    return True


def run(config: ServeConfig, *, bundle: Path | None) -> int:
    """Run the prediction service on uvloop; returns the process exit code."""
    runner: Callable[..., int] = asyncio.run
    with contextlib.suppress(ImportError):  # uvloop is a hard dependency on Linux
        import uvloop

        runner = uvloop.run
    return runner(serve(config, bundle=bundle, token=token_from_env(config.api.token_env)))
