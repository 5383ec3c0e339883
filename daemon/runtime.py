"""Process-level tuning the daemon applies once it is warm (the benchmarks apply the same)."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import structlog

from vlm_engine.thread_policy import NORMAL, at_policy

log = structlog.get_logger("daemon.runtime")

# Allocations per young-generation collection. CPython's default (700) runs a collection every few
# bars at 100 symbols; measured on the pipeline benchmark this setting gave +5-15% bars/s and a
# lower p99. Cyclic garbage is still collected, only less often.
GC_THRESHOLDS = (50_000, 50, 100)

# The lowest real-time priority: above every normal thread, below any other real-time one. Reset on
# fork: a thread or process started from the order path (a to_thread worker, the bootstrap) is a
# normal one. (os.SCHED_* exist on Linux only; elsewhere the priority is never available.)
_REALTIME = getattr(os, "SCHED_FIFO", 0) | getattr(os, "SCHED_RESET_ON_FORK", 0)

P = ParamSpec("P")
T = TypeVar("T")


class OrderPathGate:
    """Process-wide: how many batches are on their way to the broker (Pipeline.on_bars, from a
    batch's arrival until its orders are out), so that background work no order waits for (the
    WAL checkpointers' passes) starts only while none is.

    Why: a checkpoint pass (the paper venue's log fold, the WAL copy) is 1-3 ms of CPU on another
    thread; one landing in a batch takes a core from the scorer's thread or the CLIP pool's,
    which want both. Measured in bench_ml_pipeline's process (100 symbols, paced, load 1.9):
    the 17 of 200 ml batches a pass overlapped, order p50 12.4 ms against 9.2 for the rest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Event()
        self._idle.set()

    def hold(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._idle.clear()

    def release(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if self._in_flight == 0:
                self._idle.set()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no batch is in flight, at most timeout seconds (a stuck hold never stops
        the background work for good); True when none is."""
        return self._idle.wait(timeout)


ORDER_PATH_GATE = OrderPathGate()


def tune_gc() -> None:
    """Freeze what start-up allocated (models, configs) out of the collector's scans; collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class OrderPathPriority:
    """Real-time scheduling (SCHED_FIFO 1) for the thread carrying a batch to the broker, normal
    again once the orders are out (enter() / leave(); disabled, they only hold and release
    ORDER_PATH_GATE, unless hold_background is False).

    Why: on a busy machine the order path's tail is time spent runnable but waiting for a CPU
    (StageClock's run delay), mostly after it blocked (the journal's fsync under FULL) and
    another process took the CPU; a nicer value or a shorter EEVDF slice did not change it
    (measured), a real-time policy removes it. It needs CAP_SYS_NICE or RLIMIT_RTPRIO >= 1
    (systemd: LimitRTPRIO=1, RestrictRealtime=false): when refused, one
    `runtime.realtime_refused` line and the path runs at normal priority from then on."""

    def __init__(self, *, enabled: bool, hold_background: bool = True) -> None:
        self.enabled = enabled and bool(getattr(os, "SCHED_FIFO", 0))
        # ORDER_PATH_GATE held from enter() to leave(), whatever the policy: the WAL
        # checkpointers start no pass meanwhile (False: they may, as before round 10)
        self.hold_background = hold_background
        self._raised = False
        self._holding = False
        self._granted = False  # logged once, at the first batch carried at real-time priority

    def enter(self) -> None:
        if self.hold_background and not self._holding:
            self._holding = True
            ORDER_PATH_GATE.hold()
        if not self.enabled or self._raised:
            return
        try:
            os.sched_setscheduler(0, _REALTIME, os.sched_param(1))  # 0: the calling thread
        except OSError as e:
            self.enabled = False
            log.warning("runtime.realtime_refused", error=str(e),
                        effect="the order path runs at normal priority")  # fmt: skip
            return
        self._raised = True
        if not self._granted:
            self._granted = True
            log.info("runtime.realtime_granted", policy="SCHED_FIFO", priority=1,
                     effect="each batch runs at real-time priority until its orders are out")  # fmt: skip

    def leave(self) -> None:
        if self._holding:
            self._holding = False
            ORDER_PATH_GATE.release()
        if not self._raised:
            return
        self._raised = False
        os.sched_setscheduler(0, NORMAL, os.sched_param(0))  # lowering is always allowed

    def carried(self, fn: Callable[P, T]) -> Callable[P, T]:
        """fn for another thread to run on the order path's behalf (the scorer's executor thread):
        while the path is raised (between enter() and leave()), a call that runs at SCHED_FIFO 1
        and is normal again when it returns or raises; otherwise fn itself. Call it on the
        loop thread when handing the work off, so work handed off after the orders are out (the
        shadow, the explainer, the deferred reasons) stays normal.

        Why: on the ML path the order path's CPU work is not on the loop thread (it awaits), but
        in the scorer's thread and the CLIP pool's (which follow the scorer thread's policy:
        vlm_engine/infer/engine.py); raising the loop alone leaves that work waiting for a CPU.
        The thread raises itself once it runs, so its wake-up is still at normal priority:
        raising a thread of the path's own by id before the hand-off measured no better (same
        run, load 3.4-4.0: order p50/p99 at 100 symbols 18.0/28.9 ms unpaced against 16.6/27.7,
        at 10 symbols 4.46/9.53 against 4.06/9.51) for a thread and a context copy more."""
        if not self._raised:
            return fn
        return at_policy(fn, _REALTIME, os.sched_param(1))
