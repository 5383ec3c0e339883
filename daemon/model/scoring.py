"""Windows -> Signals, timed: the one scoring call of the daemon's pipeline, its POST /predict and
`vlmtrader serve`, and the lines /metrics turns into latency histograms.

A scoring call is timed where it runs (off the event loop for a model); its `model.inferred`
(and, when CLIP drew charts, `charts.rendered`) line is written after the fact, once the orders
are out on the daemon's path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog

from daemon.errors import InputError
from daemon.runtime import OrderPathPriority
from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.drift import DriftReport
from strategy.scoring import Scorer
from strategy.types import Bar, Signal

log = structlog.get_logger("daemon.model")


class ScoredBatch(msgspec.Struct, frozen=True, kw_only=True):
    """One scoring call's signals and how long it took (render_seconds: the charts CLIP drew);
    evidence: what an ML scorer saw (strategy.ml_scorer.Evidence, taken under the score lock),
    handed to the explainer once the orders are out; None for the rule scorer.
    deferred: when the call left work for after the orders (MLScorer.score_deferred: the top
    reasons and the drift update), what finish_off_loop() needs; the signals carry no reasons
    until then."""

    signals: list[Signal]
    scorer: str
    seconds: float
    render_seconds: float = 0.0
    evidence: Any = None
    deferred: Any = None


def score_windows(
    scorer: Scorer, windows: Sequence[Window], *, defer_reasons: bool = False
) -> ScoredBatch:
    """Score windows and time it (blocking for a model: run it in a thread). defer_reasons: a
    scorer that can (MLScorer.score_deferred) leaves its reasons for finish_off_loop()."""
    vision = getattr(scorer, "vision", None)
    drawn = float(getattr(vision, "render_seconds", 0.0))
    deferred = getattr(scorer, "score_deferred", None) if defer_reasons else None
    left = None
    started = time.perf_counter()
    if deferred is not None:
        signals, left = deferred(windows)
    else:
        signals = scorer.score(windows)
    seconds = time.perf_counter() - started
    rendered = float(getattr(vision, "render_seconds", 0.0)) - drawn
    return ScoredBatch(
        signals=signals,
        scorer=scorer.name,
        seconds=seconds,
        render_seconds=max(rendered, 0.0),
        evidence=getattr(scorer, "evidence", None),
        deferred=left,
    )


async def score_off_loop(
    scorer: Scorer,
    windows: Sequence[Window],
    lock: asyncio.Lock,
    *,
    defer_reasons: bool = False,
    priority: OrderPathPriority | None = None,
) -> ScoredBatch:
    """score_windows for the event loop: a blocking scorer runs in a thread under the lock that
    keeps its fusion and drift state to one caller; the rule scorer runs inline. priority: the
    order path's (Pipeline.priority): the thread scores at its policy while the path is raised."""
    if not scorer.blocking:
        return score_windows(scorer, windows)
    async with lock:
        score = score_windows if priority is None else priority.carried(score_windows)
        return await asyncio.to_thread(score, scorer, windows, defer_reasons=defer_reasons)


async def finish_off_loop(scorer: Scorer, batch: ScoredBatch, lock: asyncio.Lock) -> list[Signal]:
    """The batch's signals with what score_windows(defer_reasons=True) left out (MLScorer.finish,
    in a thread under the scorer's lock: it updates the drift monitor); unchanged when nothing
    was left."""
    if batch.deferred is None:
        return batch.signals
    finish = scorer.finish  # type: ignore[attr-defined]  # a scorer that deferred has one
    async with lock:
        return await asyncio.to_thread(finish, batch.signals, batch.deferred)  # type: ignore[no-any-return]


def log_scored(scorer: Scorer, batch: ScoredBatch) -> None:
    """The timing lines /metrics turns into latency histograms, then any drift the batch found."""
    log_inferred(batch, scorer=batch.scorer)
    if batch.render_seconds > 0:
        log.info("charts.rendered", charts=len(batch.signals),
                 duration_ms=round(batch.render_seconds * 1000, 3))  # fmt: skip
    log_drift(scorer)


def log_inferred(batch: ScoredBatch, *, scorer: str) -> None:
    """The batch's `model.inferred` line under the scorer label /metrics files it by (render
    time left out: it has its own line)."""
    log.info(
        "model.inferred",
        scorer=scorer,
        items=len(batch.signals),
        duration_ms=round(max(batch.seconds - batch.render_seconds, 0.0) * 1000, 3),
    )


def log_drift(scorer: object) -> int:
    """Log each drift crossing the scorer found since the last call as model.drift_detected; returns how many."""
    take = getattr(scorer, "take_drift_reports", None)
    if take is None:
        return 0
    reports: list[DriftReport] = take()
    for r in reports:
        log.warning(
            "model.drift_detected",
            scorer=getattr(scorer, "name", ""),
            max_psi=round(r.max_psi, 4),
            drifted=list(r.drifted),
            threshold=r.threshold,
            samples=r.samples,
            bar_ts=r.ts.isoformat() if r.ts is not None else None,
            recommendation=r.recommendation,
        )
    return len(reports)


def build_window(symbol: str, bars: Sequence[Bar], *, bar_seconds: int, min_bars: int) -> Window:
    """One window through BarStore's own checks; InputError names the first bad bar."""
    if len(bars) < min_bars:
        msg = f"bars: {len(bars)} bars given, the model needs at least {min_bars}"
        raise InputError(msg)
    store = BarStore(
        config=BarStoreConfig(window=len(bars), bar_seconds=bar_seconds, gap_policy="accept")
    )
    added = store.add_batch(bars)
    if added.rejected:  # the first refused bar is where the accepted ones stop matching bars
        i = next((i for i, b in enumerate(added.accepted) if b is not bars[i]), len(added.accepted))
        problem = added.rejected[0]
        msg = f"bars[{i}]: {problem.reason}: {problem.detail}"
        raise InputError(msg)
    window = store.window(symbol)
    if window is None:  # pragma: no cover - a full store always has a window
        msg = "bars: window incomplete"
        raise InputError(msg)
    return window
