"""The explainer: a worker thread the pipeline hands each batch's orders to once they are at the
broker. submit() only enqueues (a bounded backlog: over it the batch goes unexplained, counted, one
log line); the thread builds the explanations (daemon/explain/evidence.py), stores the charts and
writes the rows. Nothing it does can reach the order path: a failure is one `explain.failed` line,
an unusable store turns explanations off with one `explain.store_unavailable` line.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import structlog

from daemon.explain.charts import ChartStore
from daemon.explain.config import ExplainConfig
from daemon.explain.evidence import BundleView, bundle_view, explain_batch
from daemon.explain.store import ExplanationStore, ExplanationStoreError
from daemon.explain.values import CHARTS_DIR, EXPLAIN_DB
from strategy.kernel import BatchDecision
from strategy.types import Signal
from vlm_engine.thread_policy import lower_calling_thread

log = structlog.get_logger("daemon.explain")

PRUNE_EVERY = 200  # explained orders between two retention passes
# While a batch is on its way to the broker the worker waits (polling every YIELD_SECONDS), at most
# MAX_DEFER_SECONDS per batch: a feed that never pauses (a replay at full speed) still gets its
# explanations, a live one's are written between bars.
YIELD_SECONDS = 0.002
MAX_DEFER_SECONDS = 0.5
_STOP = object()


class ExplainJob(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """One batch's orders and what its scorer saw (references; nothing copied on the path)."""

    scorer: Any
    evidence: Any
    signals: list[Signal]
    decision: BatchDecision


class ExplainStats(msgspec.Struct, kw_only=True):
    explained: int = 0
    dropped: int = 0
    failed: int = 0
    seconds: float = 0.0


class Explainer:
    """Context manager: opens the store, starts the thread; on exit drains what is queued and stops.

    bundle_for(scorer) is the loaded bundle that scorer serves from (None: no chart, texts or
    analogs; a swapped-out scorer's batch gets its contributions and fusion only). busy() is true
    while the pipeline is inside a batch: the worker starts a batch's explanations between two."""

    def __init__(
        self,
        *,
        config: ExplainConfig,
        state_dir: Path,
        bundle_for: Callable[[Any], Any] | None = None,
        busy: Callable[[], bool] | None = None,
        max_defer_seconds: float = MAX_DEFER_SECONDS,
    ) -> None:
        self.config = config
        self.store = ExplanationStore(path=Path(state_dir) / EXPLAIN_DB)
        self.charts = ChartStore(directory=Path(state_dir) / CHARTS_DIR)
        self.bundle_for = bundle_for or (lambda _scorer: None)
        self.busy = busy or (lambda: False)  # the pipeline is inside a batch: keep off the GIL
        self.max_defer_seconds = max_defer_seconds
        self.stats = ExplainStats()
        self.enabled = config.enabled
        self._pending = 0  # batches queued or being explained
        self._done = threading.Condition()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.backlog)
        self._thread: threading.Thread | None = None
        self._views: dict[str, BundleView] = {}
        self._since_prune = 0

    # ---- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Explainer:
        if not self.enabled:
            return self
        try:
            self.store.open()
        except ExplanationStoreError as e:
            self.enabled = False
            log.error("explain.store_unavailable", error=str(e), effect="orders go unexplained")
            return self
        self._thread = threading.Thread(target=self._run, name="explainer", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Explain what is queued (at most `timeout` seconds), then stop the thread and the store."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
        self.store.close()

    # ---- the pipeline's side ------------------------------------------------------------------
    def submit(
        self, *, scorer: Any, evidence: Any, signals: list[Signal], decision: BatchDecision
    ) -> None:
        """Queue a batch's orders; never blocks and never raises (a full backlog drops the batch)."""
        if self._thread is None or not decision.orders:
            return
        with self._done:
            self._pending += 1
        try:
            self._queue.put_nowait(
                ExplainJob(scorer=scorer, evidence=evidence, signals=signals, decision=decision)
            )
        except queue.Full:
            self._finished()
            self.stats.dropped += len(decision.orders)
            log.warning(
                "explain.dropped",
                orders=len(decision.orders),
                dropped_total=self.stats.dropped,
                backlog=self.config.backlog,
            )

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued batch is written (tests, benches); False at the timeout."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def _finished(self) -> None:
        with self._done:
            self._pending -= 1
            self._done.notify_all()

    # ---- the worker thread --------------------------------------------------------------------
    def _run(self) -> None:
        lower_calling_thread()  # nothing an order waits for: the batch's threads come first
        self._prune()  # the start's retention pass, here rather than on the daemon's start-up
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                self._defer()
                self.explain(job)
            finally:
                self._finished()

    def _defer(self) -> None:
        """Wait while the pipeline is inside a batch (at most max_defer_seconds)."""
        deadline = time.monotonic() + self.max_defer_seconds
        while self.busy() and time.monotonic() < deadline:
            time.sleep(YIELD_SECONDS)

    def explain(self, job: ExplainJob) -> None:
        """Explain and store one batch's orders (the worker calls it; the bench may call it too)."""
        started = time.perf_counter()
        try:
            explanations = explain_batch(
                scorer=job.scorer,
                evidence=job.evidence,
                signals=job.signals,
                decision=job.decision,
                view=self._view(job.scorer) if job.evidence is not None else None,
                put_chart=self.charts.put,
                top_k=self.config.top_k,
                analogs_k=self.config.analogs_k,
            )
            self.store.put(explanations)
        except Exception as e:  # an explanation never stops the daemon
            self.stats.failed += len(job.decision.orders)
            log.warning(
                "explain.failed",
                orders=[o.client_order_id for o in job.decision.orders][:10],
                error=f"{type(e).__name__}: {e}"[:300],
            )
            return
        seconds = time.perf_counter() - started
        self.stats.explained += len(explanations)
        self.stats.seconds += seconds
        for done in explanations:
            log.debug(
                "order.explained",
                client_order_id=done.client_order_id,
                chart=done.chart.hash if done.chart is not None else None,
                texts=[t.pattern for t in done.texts[:3]],
            )
        self._since_prune += len(explanations)
        if self._since_prune >= PRUNE_EVERY:
            self._prune()

    def _view(self, scorer: Any) -> BundleView | None:
        bundle = self.bundle_for(scorer)
        if bundle is None:
            return None
        view = self._views.get(bundle.bundle_id)
        if view is None:
            view = bundle_view(bundle)
            self._views = {bundle.bundle_id: view}  # one bundle serves at a time
        return view

    def _prune(self) -> None:
        """Retention: charts past max_age_days or beyond max_charts, and explanations past max_age_days."""
        self._since_prune = 0
        cfg = self.config
        try:
            charts = self.charts.prune(max_charts=cfg.max_charts, max_age_days=cfg.max_age_days)
            rows = self.store.prune(time.time() - cfg.max_age_days * 86_400)
        except Exception as e:  # retention failing must not stop explanations or trading
            log.warning("explain.prune_failed", error=f"{type(e).__name__}: {e}"[:300])
            return
        if charts or rows:
            log.info("explain.pruned", charts=charts, explanations=rows)
