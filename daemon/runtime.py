"""Process-level tuning the daemon applies once it is warm (the benchmarks apply the same)."""

from __future__ import annotations

import gc
import os
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


def tune_gc() -> None:
    """Freeze what start-up allocated (models, configs) out of the collector's scans; collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class OrderPathPriority:
    """Real-time scheduling (SCHED_FIFO 1) for the thread carrying a batch to the broker, normal
    again once the orders are out (enter() / leave(), both cheap no-ops when disabled).

    Why: on a busy machine the order path's tail is time spent runnable but waiting for a CPU
    (StageClock's run delay), mostly after it blocked (the journal's fsync under FULL) and
    another process took the CPU; a nicer value or a shorter EEVDF slice did not change it
    (measured), a real-time policy removes it. It needs CAP_SYS_NICE or RLIMIT_RTPRIO >= 1
    (systemd: LimitRTPRIO=1, RestrictRealtime=false): when refused, one
    `runtime.realtime_refused` line and the path runs at normal priority from then on."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled and bool(getattr(os, "SCHED_FIFO", 0))
        self._raised = False
        self._granted = False  # logged once, at the first batch carried at real-time priority

    def enter(self) -> None:
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
