"""`vlmtrader serve`: the prediction API on its own, without trading: a micro-batcher feeding the
warm model, hot-swap, clean stop.

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
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import structlog

from daemon.api.app import build_app
from daemon.api.auth import token_from_env
from daemon.api.config import ApiConfig
from daemon.api.metrics import Metrics
from daemon.api.server import ApiServer
from daemon.control import Controller
from daemon.errors import EXIT_CONFIG, EXIT_OK, InputError, InvariantError
from daemon.log_setup import add_event_sink, remove_event_sink
from daemon.model.active import LoadOptions, rules_model
from daemon.model.batcher import BatchConfig, MicroBatcher
from daemon.model.charts import ChartSignalConfig
from daemon.model.loader import BundleUnusable
from daemon.model.predict import Item, ModelPredictor
from daemon.model.prediction import Prediction
from daemon.model.search import DaemonSearch
from daemon.model.slot import ModelSlot
from daemon.reload_plan import ReloadReport
from strategy.rule_scorer import RuleScorerConfig
from strategy.types import TradingState

log = structlog.get_logger("daemon.serve")

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
_NO_TRADING = (
    "`vlmtrader serve` only predicts; {what} is a command for the trading daemon (`vlmtrader run`)"
)


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
    # what runs CLIP's image tower, as scorer.runtime of the daemon (engine.runtime_chosen logs it)
    runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    rules: RuleScorerConfig = msgspec.field(default_factory=RuleScorerConfig)
    clip: ChartSignalConfig = msgspec.field(default_factory=ChartSignalConfig)


def serve_slot(config: ServeConfig, bundle: Path | None) -> ModelSlot:
    """The rule scorer now; the bundle (loaded by reload) once it is warm."""
    options = LoadOptions(
        mode=config.mode, device=config.device, threads=config.threads, runtime=config.runtime
    )
    return ModelSlot(
        active=rules_model(config.rules, bar_seconds=config.bar_seconds),
        options=options,
        bundle_path=bundle,
        loading=bundle is not None,
    )


class ServeControl:
    """The DaemonControl of `vlmtrader serve`: reload a bundle, status and readiness; trading
    commands are refused."""

    def __init__(self, *, config: ServeConfig, bundle: Path | None = None) -> None:
        self.config = config
        self.slot = serve_slot(config, bundle)
        self.predictor = ModelPredictor(slot=self.slot, batch=config.batch, charts=config.clip)

    @property
    def batcher(self) -> MicroBatcher[Item, Prediction]:
        batcher = self.predictor.batcher
        if batcher is None:  # pragma: no cover - built with a batch config above
            msg = "the serve predictor has no batcher"
            raise InvariantError(msg)
        return batcher

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
        if not path and self.slot.bundle_path is None:
            msg = 'no bundle to reload: started with --rules; name one as {"path": DIR}'
            raise InputError(msg)
        bundle_id = await self.slot.reload(path)
        if path:
            self.slot.bundle_path = Path(path)
        return bundle_id

    def status(self) -> dict[str, Any]:
        model, stats = self.slot.active, self.batcher.stats
        bundle = model.bundle
        return {
            "mode": "serve",
            "scorer": model.scorer.name,
            "bundle_id": model.bundle_id,
            "bundle_path": str(bundle.path) if bundle is not None else None,
            "spec_hash": bundle.spec_hash if bundle is not None else None,
            "runtime": bundle.engine.runtime if bundle is not None else None,
            "loading": self.slot.loading,
            "queued": self.batcher.depth,
            "requests": stats.scored,
            "batches": stats.batches,
            "largest_batch": stats.largest,
            "rejected": stats.rejected,
        }

    def readiness(self) -> dict[str, bool]:
        return {"model_warm": self.slot.warm, "accepting": self.batcher.accepting}


# ---- the process ------------------------------------------------------------------------------
async def serve(config: ServeConfig, *, bundle: Path | None, token: str | None) -> int:
    """Listen until SIGTERM/SIGINT (exit 0) or until the startup bundle fails to load (exit 2)."""
    metrics = Metrics()
    service = ServeControl(config=config, bundle=bundle)
    metrics.add_queue("predict", lambda: service.batcher.depth)
    app = build_app(
        controller=Controller(control=service),
        metrics=metrics,
        predictor=service.predictor,
        token=token,
        config=config.api,
        searcher=DaemonSearch(slot=service.slot, store=None),  # no bars here: a 409 says so
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    add_event_sink(metrics.on_event)
    code = EXIT_OK
    try:
        async with service.batcher, ApiServer(config=config.api, app=app) as server:
            log.info(
                "serve.started",
                url=server.url,
                port=server.port,
                scorer=service.slot.current.name,
                bundle=str(bundle) if bundle else None,
                max_batch=config.batch.max_items,
                max_wait_ms=config.batch.max_wait_ms,
            )
            if bundle is not None and not await _load_or_stop(service.slot, stop):
                code = EXIT_CONFIG
            else:
                await stop.wait()
            log.info("serve.stopping", queued=service.batcher.depth)
    finally:
        remove_event_sink(metrics.on_event)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    stats = service.batcher.stats
    log.info("serve.stopped", requests=stats.scored, batches=stats.batches, exit_code=code)
    return code


async def _load_or_stop(slot: ModelSlot, stop: asyncio.Event) -> bool:
    """Load the startup bundle while serving rules; False when it cannot be used."""
    loader = asyncio.create_task(slot.reload(None), name="bundle-load")
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
